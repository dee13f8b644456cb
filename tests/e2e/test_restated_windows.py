"""Restatement and backfill end to end: a real worker exports the 1-minute windows of an event set over
several hours and a day boundary; late events then reach the raw archive only. `faust -A app batch`
(a subprocess, SIGKILLed once in its middle) restates the windows they fall in: the 1-minute rows in S3
and Redis must equal a plain-Python reference over every event, with revision 1 and late_count where
late events fell and revision 0 elsewhere. A run after that writes nothing. Then the two backfills:
a flushed Redis repopulated from the lake, and a window added to WINDOWS computed from the raw archive.

A second test starts its traffic at an hour boundary: the hopping window starting 30 s before it is
stored under an hour without raw files of its own, and must be restated and backfilled all the same."""

from __future__ import annotations

import signal
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import groundtruth as gt
import redis
from batch_events import (
    BATCH_COMMAND,
    BATCH_DEADLINE_S,
    HOUR_MS,
    SENTINEL_MS,
    STEP_DEADLINE_S,
    WindowKey,
    archived,
    decode,
    etags,
    lake_windows,
    late_events,
    on_time_events,
    sentinels,
    window_reference,
)
from helpers import wait_for
from pipeline_harness import ROOT, Worker, create_topics, names_for, produce, run, web_port, worker_env

from devstack.stack import Endpoints
from formats.events import iso_utc
from formats.rows import WindowRow
from sinks.redis_store import RedisWindowStore

FIVE = ("tumbling_5m", 300_000, 300_000)
BACKFILL = ["--from", "2026-11-01T21:00Z", "--to", "2026-11-02T02:00Z"]


def redis_windows(store: RedisWindowStore, keys: list[WindowKey]) -> dict[WindowKey, WindowRow | None]:
    return {key: store.get_window(key[0], key[2], key[1]) for key in keys}


def batch(env: dict[str, str], log: Path, *args: str) -> str:
    result = subprocess.run([*BATCH_COMMAND, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=BATCH_DEADLINE_S)
    with open(log, "a") as out:
        out.write(result.stdout + result.stderr)
    assert result.returncode == 0, f"batch failed ({result.returncode}): {result.stdout}{result.stderr}"
    return result.stdout


def kill_at_first_restated_window(env: dict[str, str], log: Path) -> None:
    """SIGKILL the run right after its first window is restated (Redis and S3 written, the others and the
    hour's manifest not yet)."""
    process = subprocess.Popen(BATCH_COMMAND, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if line.startswith("restated "):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)
    with open(log, "a") as out:
        out.write("".join(seen) + "[SIGKILL]\n")
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {''.join(seen)}"


def test_restated_windows_and_backfills_equal_the_reference(stack: Endpoints, unique_name: str,
                                                              tmp_path: Path) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    env = worker_env(stack, names, tmp_path / "state", web_port())
    worker = Worker(env, tmp_path / "worker.log")
    log = tmp_path / "batch.log"
    store = RedisWindowStore(stack.redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=60)
    store.open()
    worker.start()
    try:
        phase1 = on_time_events()
        run(produce(stack, names.events, phase1 + sentinels()))
        speed = window_reference(decode(phase1), [])
        wait_for(lambda: worker.status()["frontier_ms"] == SENTINEL_MS - gt.LATENESS_MS, timeout_s=STEP_DEADLINE_S,
                 what="the frontier to pass both days", detail=worker.status)
        wait_for(lambda: archived(client, names) == len(phase1) + gt.PARTITIONS, timeout_s=STEP_DEADLINE_S,
                 what="every event in the raw archive")
        wait_for(lambda: len(lake_windows(client, names.bucket)) == len(speed), timeout_s=STEP_DEADLINE_S,
                 what="stage 2 to export every window")

        # Nothing late yet: every window recomputes to its exported row, nothing is restated.
        out = batch(env, log)
        # Hours 20 and 23 of Nov 2 have no events, but windows over 21:00 and over the sentinels at 00:30.
        assert "windows of 7 hours checked: 0 rows restated in 0 windows" in out, out
        assert lake_windows(client, names.bucket) == speed

        # Late events for sealed hours: archived, not counted by the speed layer.
        phase2 = late_events()
        run(produce(stack, names.events, phase2))
        wait_for(lambda: archived(client, names) == len(phase1) + len(phase2) + gt.PARTITIONS,
                 timeout_s=STEP_DEADLINE_S, what="the late events in the raw archive")
        assert lake_windows(client, names.bucket) == speed

        kill_at_first_restated_window(env, log)
        out = batch(env, log)
        expected = window_reference(decode(phase1), decode(phase2))
        restated = {key: row for key, row in expected.items() if row.revision}
        assert len(restated) >= 20 and any(key not in speed for key in restated)  # "refund" is a new type
        assert lake_windows(client, names.bucket) == expected
        assert redis_windows(store, sorted(expected)) == expected

        # Nothing new: nothing written.
        before = etags(client, names.bucket)
        out = batch(env, log)
        assert "0 objects written" in out and "0 rows restated" in out, out
        assert etags(client, names.bucket) == before

        # (b) Redis flushed: a backfill repopulates it from the lake, and writes no object.
        flushed = redis.Redis.from_url(stack.redis_url)
        keys = list(flushed.scan_iter(match=f"{names.redis_prefix}*"))
        flushed.delete(*keys)
        assert set(redis_windows(store, sorted(expected)).values()) == {None}
        out = batch(env, log, *BACKFILL)
        assert redis_windows(store, sorted(expected)) == expected
        assert f"{len(expected)} rows written to Redis" in out, out
        changed = {k for k, e in etags(client, names.bucket).items() if before.get(k) != e}
        assert not {k for k in changed if k.startswith("aggregated/") and "/hourly/" not in k
                    and "/daily/" not in k}, "a backfill rewrites no window object whose rows are right"

        # (a) A window added to WINDOWS: the backfill computes it exactly from the raw archive.
        wider = {**env, "WINDOWS": "tumbling_1m:60s,hopping_1m:60s:30s,tumbling_5m:5m"}
        batch(wider, log, *BACKFILL)
        five = {key: row._replace(revision=1, late_count=row.count)
                for key, row in window_reference(decode(phase1), decode(phase2), (FIVE,)).items()}
        got = lake_windows(client, names.bucket)
        assert {key: row for key, row in got.items() if key[0] == "tumbling_5m"} == five
        assert {key: row for key, row in got.items() if key[0] != "tumbling_5m"} == expected
        assert redis_windows(store, sorted(five)) == five
    finally:
        store.close()
        worker.stop()


# -- traffic that starts at an hour boundary -------------------------------------------------

BOUNDARY_MS = int(datetime(2026, 11, 28, 22, 0, tzinfo=timezone.utc).timestamp() * 1000)
BOUNDARY_SENTINEL_MS = BOUNDARY_MS + 2 * HOUR_MS + 30 * 60_000  # 00:30 next day: hours 21 to 23 and the day sealed
EARLIER_HOUR = ["--from", "2026-11-28T21:00Z", "--to", "2026-11-28T22:00Z"]
TYPES = ("click", "view", "purchase")


def boundary_events() -> list[gt.Produced]:
    """From 22:00:00.000 on, none before: every 2 s on every partition for 5 minutes, the types in turn."""
    records = []
    for i in range(150):
        for partition in range(gt.PARTITIONS):
            event_ms = BOUNDARY_MS + i * 2_000 + partition * 11
            user = f"u{(i + partition) % 7}"
            records.append(gt.Produced(partition, user.encode(),
                                       gt.encode(user, TYPES[(i + partition) % 3], event_ms, (i % 40) / 4)))
    return records


def boundary_sentinels() -> list[gt.Produced]:
    return [gt.Produced(p, b"sentinel", gt.encode("sentinel", "sentinel", BOUNDARY_SENTINEL_MS, 0.0))
            for p in range(gt.PARTITIONS)]


def test_a_window_before_the_first_hour_with_events_is_restated_and_backfilled(
        stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    env = worker_env(stack, names, tmp_path / "state", web_port())
    worker = Worker(env, tmp_path / "worker.log")
    log = tmp_path / "batch.log"
    store = RedisWindowStore(stack.redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=60)
    store.open()
    worker.start()
    try:
        phase1 = boundary_events()
        run(produce(stack, names.events, phase1 + boundary_sentinels()))
        speed = window_reference(decode(phase1), [])
        straddling = ("hopping_1m", BOUNDARY_MS - 30_000, "click")  # [21:59:30, 22:00:30), stored under hour 21
        assert speed[straddling].count > 0
        wait_for(lambda: worker.status()["frontier_ms"] == BOUNDARY_SENTINEL_MS - gt.LATENESS_MS,
                 timeout_s=STEP_DEADLINE_S, what="the frontier to pass the events", detail=worker.status)
        wait_for(lambda: archived(client, names) == len(phase1) + gt.PARTITIONS, timeout_s=STEP_DEADLINE_S,
                 what="every event in the raw archive")
        wait_for(lambda: len(lake_windows(client, names.bucket)) == len(speed), timeout_s=STEP_DEADLINE_S,
                 what="stage 2 to export every window")
        out = batch(env, log)
        assert "0 rows restated in 0 windows" in out, out

        # One late event 10 s into the first hour: it falls in a window of hour 21, which has no raw file.
        late = [gt.Produced(2, b"late", gt.encode("late", "click", BOUNDARY_MS + 10_000, 7.25))]
        run(produce(stack, names.events, late))
        wait_for(lambda: archived(client, names) == len(phase1) + len(late) + gt.PARTITIONS,
                 timeout_s=STEP_DEADLINE_S, what="the late event in the raw archive")
        out = batch(env, log)
        expected = window_reference(decode(phase1), decode(late))
        row = expected[straddling]
        assert (row.count, row.revision, row.late_count) == (speed[straddling].count + 1, 1, 1)
        assert lake_windows(client, names.bucket) == expected
        assert redis_windows(store, sorted(expected)) == expected
        assert f"restated hopping_1m {iso_utc(BOUNDARY_MS - 30_000)}: 'click' {speed[straddling].count} -> " in out, out

        # Redis loses the windows: a backfill of hour 21 alone writes its rows back, latest index included.
        flushed = redis.Redis.from_url(stack.redis_url)
        flushed.delete(*flushed.scan_iter(match=f"{names.redis_prefix}*"))
        earlier = sorted(key for key in expected if key[1] < BOUNDARY_MS)
        assert earlier and set(redis_windows(store, earlier).values()) == {None}
        out = batch(env, log, *EARLIER_HOUR)
        assert f"{len(earlier)} rows written to Redis" in out, out
        assert redis_windows(store, earlier) == {key: expected[key] for key in earlier}
        assert store.latest("hopping_1m", "click", 60) == [expected[straddling]]
    finally:
        store.close()
        worker.stop()

