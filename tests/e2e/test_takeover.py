"""Two workers, one SIGKILLed in mid-stream and not restarted: the survivor takes over its
partitions and every output stays exact. And with the two workers' partitions an hour apart in
event time, no on-time event is called late, before or after the takeover: lateness is judged on
the low watermark of all input partitions, never on one worker's."""

from __future__ import annotations

import time
from pathlib import Path

import checks
import groundtruth as gt
import pytest
from helpers import wait_for
from pipeline_harness import (
    Names,
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
from sinks.redis_store import RedisWindowStore

PER_PARTITION = 1_200
STEP_DEADLINE_S = 180.0
WINDOW_MS = {name: size for name, size, _ in gt.WINDOWS}
HOUR_MS = 3_600_000


def _owners(workers: list[Worker]) -> list[dict[str, list[int]]]:
    return [w.status()["assigned"] for w in workers]


def _owns_everything(worker: Worker) -> bool:
    assigned = worker.status()["assigned"]
    everything = list(range(gt.PARTITIONS))
    return assigned["events"] == everything and assigned["partials"] == everything and \
        worker.get("/v1/health/ready")[0] == 200


def _shift(records: list[gt.Produced], partitions: set[int], shift_ms: int) -> list[gt.Produced]:
    """The records of `partitions` moved `shift_ms` later in event time (their ISO and epoch-ms stamps alike)."""
    import orjson

    from formats.events import decode_event

    moved = []
    for record in records:
        if record.partition in partitions and record.key != b"bad":
            event = decode_event(record.value, max_bytes=10**6, min_event_ms=0, max_event_ms=10**15)
            body = orjson.loads(record.value)
            body["timestamp"] = event.event_ms + shift_ms  # type: ignore[union-attr]
            record = gt.Produced(record.partition, record.key, orjson.dumps(body))
        moved.append(record)
    return moved


def assert_every_output_exact(stack: Endpoints, names: Names, on_time: list[gt.Produced], offsets: list[int],
                              reasons: list[tuple[int, str]]) -> None:
    """Sentinels close every window; then S3, Redis, the dead letters, the late topic (empty: every event is
    on time) and the raw archive must equal the ground truth of the on-time events at these offsets."""
    client = stack.s3_client()
    bad = {i for i, _ in reasons}
    valid = [(r.partition, o, gt.decode_valid(r)) for i, (r, o) in enumerate(zip(on_time, offsets, strict=True))
             if i not in bad]
    sentinel_offsets = run(produce(stack, names.events, gt.sentinels()))
    expected = gt.reference([v for _, _, v in valid], [], 0)  # type: ignore[misc]
    wait_for(lambda: sum(len(r) for r in read_aggregates(client, names.bucket).values()) >= len(expected.rows),
             timeout_s=STEP_DEADLINE_S, what="every window in S3")
    positions = {(p, o) for p, o, _ in valid} | set(enumerate(sentinel_offsets))
    wait_for(lambda: sum(len(r) for r in read_archive(client, names.bucket).values()) >= len(positions),
             timeout_s=STEP_DEADLINE_S, what="every valid event in the raw archive")

    problems = checks.aggregates(read_aggregates(client, names.bucket), expected.rows, WINDOW_MS)
    store = RedisWindowStore(stack.redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=60)
    store.open()
    try:
        wait_for(lambda: checks.redis_windows_written(store, expected.rows) >= len(expected.rows),
                 timeout_s=STEP_DEADLINE_S, what="every window in Redis")
        problems += checks.redis_rows(store, expected.rows, WINDOW_MS)
    finally:
        store.close()
    dead = [(on_time[i].partition, offsets[i], on_time[i].value, reason) for i, reason in reasons]
    problems += checks.dead_letters(run(read_topic(stack, names.dlq)), dead)
    problems += checks.late_records(run(read_topic(stack, names.late)), {})  # every event is on time
    problems += checks.archive(read_archive(client, names.bucket), positions)
    assert not problems, "\n".join(problems)


def _run(stack: Endpoints, names: Names, tmp_path: Path, *, far_apart: bool) -> float:
    """Returns the seconds from the SIGKILL until the survivor owned every partition and was ready."""
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    workers = [Worker(worker_env(stack, names, tmp_path / f"state{i}", web_port()), tmp_path / f"worker{i}.log")
               for i in range(2)]
    on_time, reasons = gt.phase1(PER_PARTITION, seed=5)
    ahead = {2, 3}  # with far_apart: these partitions run an hour ahead of 0 and 1
    if far_apart:
        on_time = _shift(on_time, ahead, HOUR_MS)
    try:
        for worker in workers:
            worker.start()
        wait_for(lambda: all(_owners(workers)) and all(w.get("/v1/health/ready")[0] == 200 for w in workers)
                 and all(o["events"] for o in _owners(workers)), timeout_s=STEP_DEADLINE_S,
                 what="both workers to share the partitions", detail=lambda: _owners(workers))
        half = len(on_time) // 2
        offsets = run(produce(stack, names.events, on_time[:half]))
        last = {str(r.partition): o for r, o in zip(on_time[:half], offsets, strict=True)}

        def read_half() -> bool:
            done: dict[str, int] = {}
            for worker in workers:
                for p, offset in worker.status()["input_offsets"].items():
                    done[p] = max(done.get(p, -1), offset)
            return all(done.get(p, -1) >= o for p, o in last.items())

        wait_for(read_half, timeout_s=STEP_DEADLINE_S, what="the first half to be read")
        # Kill the owner of partition 0: the survivor takes over its partitions, stage 1 and 2.
        victim = next(w for w in workers if 0 in w.status()["assigned"]["events"])
        survivor = next(w for w in workers if w is not victim)
        victim.kill()
        killed_at = time.monotonic()
        offsets += run(produce(stack, names.events, on_time[half:]))
        wait_for(lambda: _owns_everything(survivor), timeout_s=STEP_DEADLINE_S,
                 what="the survivor to own every partition", detail=survivor.status)
        takeover_s = time.monotonic() - killed_at

        assert_every_output_exact(stack, names, on_time, offsets, reasons)
        return takeover_s
    finally:
        for worker in workers:
            worker.stop()


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_the_survivor_of_a_sigkill_takes_over_and_outputs_stay_exact(stack: Endpoints, unique_name: str,
                                                                      tmp_path: Path, capsys: pytest.CaptureFixture
                                                                      ) -> None:
    takeover_s = _run(stack, names_for(unique_name), tmp_path, far_apart=False)
    with capsys.disabled():
        print(f"\nthe survivor owned every partition {takeover_s:.1f} s after the SIGKILL")


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_partitions_an_hour_apart_on_two_workers_call_no_event_late(stack: Endpoints, unique_name: str,
                                                                     tmp_path: Path) -> None:
    _run(stack, names_for(unique_name), tmp_path, far_apart=True)
