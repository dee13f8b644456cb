"""Two workers in one consumer group on the embedded stack, the second joining in mid-stream:
every key's view is answered correctly from either worker's port (routed to the owner), the
open-window list is gathered from both, and the exported totals, the raw archive and the
dead letters equal the reference."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import groundtruth as gt
import pytest
from helpers import wait_for
from pipeline_harness import (
    Worker,
    create_topics,
    names_for,
    produce,
    read_aggregates,
    read_archive,
    read_topic,
    run,
    web_port,
    worker_env,
)

from devstack.stack import Endpoints
from formats.partials import partial_partition
from formats.side_outputs import source_offset

PER_PARTITION = 600
# Deadlines: a second worker's join makes the group rebalance (~10-20 s on this broker,
# session timeout 10 s); consuming a few thousand records takes seconds. 180 s leaves
# room for a loaded 2-core CI machine without hiding a hang.
STEP_DEADLINE_S = 180.0


def _row(window: str, start: int, event_type: str, values: tuple[int, float, float, float]) -> dict[str, Any]:
    count, total, low, high = values
    return {"window": window, "event_type": event_type, "window_start_ms": start, "window_end_ms": start + 60_000,
            "count": count, "sum": total, "min": low, "max": high, "mean": total / count,
            "revision": 0, "late_count": 0}  # the speed layer's rows


def _without_iso(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("window_start", "window_end")}


def _split(workers: list[Worker]) -> Callable[[], bool]:
    """True once each worker owns input and stage-2 partitions and together they own all, once."""
    def check() -> bool:
        for role in ("events", "partials"):
            owned = [w.status()["assigned"][role] for w in workers]
            if not all(owned) or sorted(p for parts in owned for p in parts) != list(range(gt.PARTITIONS)):
                return False
        return all(w.get("/v1/health/ready")[0] == 200 for w in workers)
    return check


@pytest.mark.timeout(600)
def test_two_workers_answer_every_key_and_keep_totals_exact(stack: Endpoints, unique_name: str,
                                                            tmp_path: Path) -> None:
    _run(stack, unique_name, tmp_path, join_mid_stream=False)


@pytest.mark.timeout(600)
def test_a_worker_joining_mid_stream_keeps_totals_and_archive_exact(stack: Endpoints, unique_name: str,
                                                                    tmp_path: Path) -> None:
    _run(stack, unique_name, tmp_path, join_mid_stream=True)


def _run(stack: Endpoints, unique_name: str, tmp_path: Path, *, join_mid_stream: bool) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    workers = []
    for i in range(2):
        env = worker_env(stack, names, tmp_path / f"state{i}", web_port())
        workers.append(Worker(env, tmp_path / f"worker{i}.log"))
    try:
        on_time, reasons = gt.phase1(PER_PARTITION)
        half = len(on_time) // 2 if join_mid_stream else 0
        # Mid-stream: one worker takes the first half, then a second joins: the group
        # rebalances, the newcomer restores its partitions' tables from their changelogs and
        # continues from the committed offsets.
        workers[0].start()
        offsets = run(produce(stack, names.events, on_time[:half])) if half else []
        first = {str(r.partition): o for r, o in zip(on_time[:half], offsets, strict=True)}
        wait_for(lambda: all(workers[0].status()["input_offsets"].get(p, -1) >= o for p, o in first.items()),
                 timeout_s=STEP_DEADLINE_S, what="the first worker to process the first half")
        workers[1].start()
        wait_for(_split(workers), timeout_s=STEP_DEADLINE_S, what="both workers to share the partitions",
                 detail=lambda: [w.status()["assigned"] for w in workers])
        offsets += run(produce(stack, names.events, on_time[half:]))
        bad = {i for i, _ in reasons}
        valid = [gt.decode_valid(r) for i, r in enumerate(on_time) if i not in bad]
        frontier_ms = gt.frontier_after(valid)
        expected = gt.reference(valid, [], frontier_ms).rows
        last = {str(r.partition): o for r, o in zip(on_time, offsets, strict=True)}

        def processed() -> bool:
            done: dict[str, int] = {}
            for worker in workers:  # a revoked partition's figure on its old owner is lower
                for p, offset in worker.status()["input_offsets"].items():
                    done[p] = max(done.get(p, -1), offset)
            return all(done.get(p, -1) >= o for p, o in last.items())

        wait_for(processed, timeout_s=STEP_DEADLINE_S, what="every record to be processed by one of the workers")
        # Both workers' stage 2 must have heard every input partition's frontier.
        wait_for(lambda: all(w.status()["watermark"]["low_ms"] == frontier_ms for w in workers),
                 timeout_s=STEP_DEADLINE_S, what=f"the low watermark to reach {frontier_ms} on both workers",
                 detail=lambda: [w.status()["watermark"] for w in workers])
        closed = {k: v for k, v in expected.items() if k[1] + 60_000 <= frontier_ms}
        still_open = {k: v for k, v in expected.items() if k[1] + 60_000 > frontier_ms}
        assert closed and still_open, "the event set must leave windows both closed and open"
        wait_for(lambda: sum(len(rows) for rows in read_aggregates(client, names.bucket).values()) >= len(closed),
                 timeout_s=STEP_DEADLINE_S, what="the closed windows in S3")

        # Every key, asked at either port: the same answer, from the key's owner.
        served_by: dict[tuple[str, int, str], set[str]] = {}
        for (window, start, event_type), values in expected.items():
            state = "closed" if (window, start, event_type) in closed else "open"
            for worker in workers:
                status, body = worker.get(f"/v1/windows/{window}/value?event_type={quote(event_type)}&start={start}")
                assert status == 200, body
                assert (body["state"], _without_iso(body["row"])) == (state, _row(window, start, event_type, values))
                if state == "open":
                    served_by.setdefault((window, start, event_type), set()).add(body["served_by"])
        assert all(len(by) == 1 for by in served_by.values()), "an open key was answered by two owners"
        # Partials go to the stage-2 partition of their event type: the worker owning it answers.
        owner = {p: w.status()["worker"] for w in workers for p in w.status()["assigned"]["partials"]}
        assert {key: by.pop() for key, by in served_by.items()} == {
            key: owner[partial_partition(key[2], gt.PARTITIONS)] for key in served_by}, "a key answered by another"
        # The open list, gathered from both workers, is the same at either port.
        for window, _, _ in gt.WINDOWS:
            want = sorted((_row(w, s, t, v) for (w, s, t), v in still_open.items() if w == window),
                          key=lambda r: (r["window_start_ms"], r["event_type"]))
            for worker in workers:
                status, body = worker.get(f"/v1/windows/{window}/open")
                assert status == 200 and body["complete"] is True, body
                assert [_without_iso(r) for r in body["open"]] == want
                # Two rows a page, each page from the previous one's next: the same list, from both workers.
                paged: list[dict[str, Any]] = []
                after = None
                for _ in range(len(want)):
                    query = {"limit": 2} if after is None else {"limit": 2, "after": after}
                    status, body = worker.get(f"/v1/windows/{window}/open?{urlencode(query)}")
                    assert status == 200 and body["complete"] is True and len(body["open"]) <= 2, body
                    paged += [_without_iso(r) for r in body["open"]]
                    after = body["next"]
                    if after is None:
                        break
                assert (paged, after) == (want, None)
                status, body = worker.get(f"/v1/windows/{window}/open?limit=10000")  # peers asked for 10,001
                assert (status, body["complete"], body["next"]) == (200, True, None), body
        assert [w.status()["duplicate_worker_urls"] for w in workers] == [[], []]  # two ports, two URLs

        # The sentinels close the rest: the exported totals are exact, and the raw archive and
        # dead-letter topic hold each record once, across the rebalance.
        sentinel_offsets = run(produce(stack, names.events, gt.sentinels()))
        wait_for(lambda: sum(len(rows) for rows in read_aggregates(client, names.bucket).values())
                 >= len(expected), timeout_s=STEP_DEADLINE_S, what="every window in S3")
        rows = [row for file_rows in read_aggregates(client, names.bucket).values() for row in file_rows]
        got = {(r.window, r.window_start_ms, r.event_type): (r.count, r.sum, r.min, r.max) for r in rows}
        assert len(rows) == len(got) and got == expected
        valid_positions = ({(r.partition, o) for i, (r, o) in enumerate(zip(on_time, offsets, strict=True))
                            if i not in bad} | set(enumerate(sentinel_offsets)))

        def archived() -> list[tuple[int, int]]:
            return [(p, o) for file_rows in read_archive(client, names.bucket).values() for p, o, _ in file_rows]

        def missing() -> str:
            gone = sorted(valid_positions - set(archived()))
            return f"{len(gone)} missing, first {gone[:10]}, last {gone[-3:]}"

        wait_for(lambda: len(archived()) >= len(valid_positions), timeout_s=STEP_DEADLINE_S,
                 what="every valid event in the raw archive", detail=missing)
        positions = archived()
        assert len(positions) == len(set(positions)) and set(positions) == valid_positions
        dead = run(read_topic(stack, names.dlq))
        assert sorted((r.partition, source_offset(list(r.headers))) for r in dead) == sorted(
            (on_time[i].partition, offsets[i]) for i in bad)
    finally:
        for worker in workers:
            worker.stop()
