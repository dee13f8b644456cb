"""End to end, with the worker as a real process on the embedded stack: the aggregated
Parquet rows, the Redis values, the dead-letter and late topics and the raw archive all
equal a reference computed in plain Python (tests/e2e/groundtruth.py); and again after
the worker is SIGKILLed in the middle of the stream and restarted."""

from __future__ import annotations

import re
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import checks
import groundtruth as gt
import pytest
import redis as redis_client
from helpers import metric_samples, wait_for
from pipeline_harness import (
    Names,
    OwnRedis,
    Worker,
    create_topics,
    list_etags,
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

PER_PARTITION = 1_800
# Deadlines: a worker joins its group in ~5 s (longer after a SIGKILL, when the broker
# first expires the dead member's 10 s session); consuming ~7,000 records takes a few
# seconds. 120 s leaves room for a loaded 2-core CI machine without hiding a hang.
STEP_DEADLINE_S = 120.0
LATEST_N = 60  # REDIS_LATEST_N's default: the closed windows Redis indexes per event type


def _run_scenario(stack: Endpoints, names: Names, tmp_path: Path, *, crash: bool = False,
                  redis: OwnRedis | None = None, per_partition: int = PER_PARTITION, oversized: bool = False,
                  fault: str | None = None, extra_env: dict[str, str] | None = None,
                  snapshot: list[dict[str, Any]] | None = None) -> None:
    """The phases of groundtruth.py against its reference; with `snapshot`, every output of the run is
    appended to it once checked (_snapshot)."""
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), **(extra_env or {})}
    if redis is not None:
        env["REDIS_URL"] = redis.url
    if fault is not None:
        env["FAULT_INJECTION"] = fault
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        # Phase 1: on time, disorder within the lateness, malformed and hostile records.
        on_time, reasons = gt.phase1(per_partition)
        if oversized:
            on_time, reasons = gt.with_oversized_record(on_time, reasons, seed=3)
        if crash:
            # SIGKILL once the first half is processed, whatever was committed by then (faust
            # commits every ~2.8 s): the restarted worker replays from its last commit.
            half = len(on_time) // 2
            offsets1 = run(produce(stack, names.events, on_time[:half]))
            last = {str(r.partition): o for r, o in zip(on_time[:half], offsets1, strict=True)}
            wait_for(lambda: all(worker.status()["input_offsets"].get(p, -1) >= o for p, o in last.items()),
                     timeout_s=STEP_DEADLINE_S, what="the first half to be processed")
            worker.kill()
            offsets1 += run(produce(stack, names.events, on_time[half:]))
            # Restarted at once, as a supervisor would: the broker still holds the dead member
            # until its 10 s session expires, so the new worker goes through two rebalances back
            # to back, where faust 0.15.3 drops fetched records (NOTES.md).
            worker.start()
        else:
            offsets1 = run(produce(stack, names.events, on_time))
        if fault is not None:
            # The injected failure stops the worker (crash-only); a supervisor starts it again.
            process = worker.process
            assert process is not None
            wait_for(lambda: process.poll() is not None, timeout_s=STEP_DEADLINE_S,
                     what=f"the worker to stop after the fault {fault}")
            assert process.returncode == 70 and "fault injected" in worker.log_path.read_text()
            del worker.env["FAULT_INJECTION"]
            worker.start()
        valid1 = [(r.partition, off, gt.decode_valid(r)) for r, off in zip(on_time, offsets1, strict=True)]
        bad_positions = {i for i, _ in reasons}
        on_time_valid = [v for i, (_, _, v) in enumerate(valid1) if i not in bad_positions]
        frontier_ms = gt.frontier_after(on_time_valid)
        wait_for(lambda: worker.status()["frontier_ms"] == frontier_ms, timeout_s=STEP_DEADLINE_S,
                 what=f"the frontier to reach {frontier_ms} after phase 1", detail=worker.status)

        # Phase 2: late records (their frontier is now fixed), then the sentinels.
        late_phase = gt.phase2(frontier_ms)
        offsets2 = run(produce(stack, names.events, late_phase))
        valid2 = [(r.partition, off, gt.decode_valid(r)) for r, off in zip(late_phase, offsets2, strict=True)]
        last_offsets = {str(p): o for p, o, _ in valid2}  # records are produced in offset order
        wait_for(lambda: all(worker.status()["input_offsets"].get(p, -1) >= o for p, o in last_offsets.items()),
                 timeout_s=STEP_DEADLINE_S, what="phase 2 to be consumed")
        expected = gt.reference(on_time_valid, valid2, frontier_ms)
        if redis is not None:
            # Redis goes away once the windows phase 1 closed are out, before the sentinels
            # close the rest: those must stay pending, retried with backoff, and be exported
            # once it is back.
            closed_rows = sum(1 for (_, start, _) in expected.rows if start + 60_000 <= frontier_ms)
            wait_for(lambda: worker.status()["rows_exported"] >= closed_rows, timeout_s=STEP_DEADLINE_S,
                     what="the windows closed by phase 1 to be exported", detail=worker.status)
            exported_before = worker.status()["rows_exported"]
            redis.stop()
        sentinel_offsets = run(produce(stack, names.events, gt.sentinels()))
        if redis is not None:
            retries = wait_for(lambda: worker.status()["sink_retries"] >= 3 and worker.status(),
                               timeout_s=STEP_DEADLINE_S, what="export retries while Redis is down")
            assert retries["rows_exported"] == exported_before
            # The windows the sentinels closed wait for Redis; their values are already final.
            pending = {k: v for k, v in expected.rows.items() if k[1] + 60_000 > frontier_ms}
            assert pending, "the sentinels must close windows of their own"
            for (window, start, event_type), values in pending.items():
                status, body = worker.get(f"/v1/windows/{window}/value?event_type={quote(event_type)}&start={start}")
                assert (status, body["state"], body["row"]) == (200, "closing",
                                                                _row_json(window, start, event_type, values))
            redis.start()

        wait_for(lambda: sum(len(rows) for rows in read_aggregates(client, names.bucket).values())
                 >= len(expected.rows), timeout_s=STEP_DEADLINE_S, what="every closed window in S3")
        valid_positions = ({(p, o) for i, (p, o, _) in enumerate(valid1) if i not in bad_positions}
                           | {(p, o) for p, o, _ in valid2}
                           | {(p, o) for p, o in enumerate(sentinel_offsets)})
        wait_for(lambda: sum(len(r) for r in read_archive(client, names.bucket).values()) >= len(valid_positions),
                 timeout_s=STEP_DEADLINE_S, what="every valid event in the raw archive")

        _check_aggregates(client, names, expected)
        _check_redis(redis.url if redis is not None else stack.redis_url, names, expected)
        _check_dead_letters(stack, names, on_time, offsets1, reasons)
        _check_late(stack, names, expected)
        _check_archive(client, names, valid_positions)
        if redis is not None:
            _check_outage_metrics(worker)
        if not crash and redis is None:  # counters restart with the worker; outages skew them
            _check_web(worker, expected, reasons)
            _check_metrics(worker, expected, reasons, on_time + late_phase + gt.sentinels())
        if snapshot is not None:
            snapshot.append(_snapshot(stack, names, worker))
    finally:
        started = time.monotonic()
        status = worker.stop()
    assert status == 0, f"the worker did not stop cleanly on SIGTERM (status {status}); see {worker.log_path}"
    assert time.monotonic() - started < 30, "the worker took more than 30 s to stop on SIGTERM"


WINDOW_MS = {name: size for name, size, _ in gt.WINDOWS}


def _check_aggregates(client: object, names: Names, expected: gt.Expected) -> None:
    problems = checks.aggregates(read_aggregates(client, names.bucket), expected.rows, WINDOW_MS)
    assert not problems, "\n".join(problems)


def _check_redis(redis_url: str, names: Names, expected: gt.Expected) -> None:
    store = RedisWindowStore(redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=60)
    store.open()
    try:
        wait_for(lambda: checks.redis_windows_written(store, expected.rows) >= len(expected.rows),
                 timeout_s=STEP_DEADLINE_S, what="every closed window in Redis")
        problems = checks.redis_rows(store, expected.rows, WINDOW_MS)
    finally:
        store.close()
    assert not problems, "\n".join(problems)


def _check_dead_letters(stack: Endpoints, names: Names, on_time: list[gt.Produced], offsets: list[int],
                        reasons: list[tuple[int, str]]) -> None:
    want = [(on_time[i].partition, offsets[i], on_time[i].value, reason) for i, reason in reasons]
    records = run(read_topic(stack, names.dlq))
    problems = checks.dead_letters(records, want)
    assert not problems, "\n".join(problems)
    # The source record's key and timestamp travel with it.
    assert {bytes(r.key) for r in records} == {on_time[i].key for i, _ in reasons}
    assert all(r.timestamp > 0 for r in records)


def _check_late(stack: Endpoints, names: Names, expected: gt.Expected) -> None:
    assert expected.late, "the event set must produce late records"
    problems = checks.late_records(run(read_topic(stack, names.late)), expected.late)
    assert not problems, "\n".join(problems)


def _check_archive(client: object, names: Names, valid_positions: set[tuple[int, int]]) -> None:
    problems = checks.archive(read_archive(client, names.bucket), valid_positions)
    assert not problems, "\n".join(problems)


def _row_json(window: str, start: int, event_type: str, values: tuple[int, float, float, float]) -> dict[str, Any]:
    count, total, low, high = values
    end = start + 60_000
    return {"window": window, "event_type": event_type, "window_start_ms": start, "window_end_ms": end,
            "window_start": _iso(start), "window_end": _iso(end),
            "count": count, "sum": total, "min": low, "max": high, "mean": total / count,
            "revision": 0, "late_count": 0}  # the speed layer's rows


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_web(worker: Worker, expected: gt.Expected, reasons: list[tuple[int, str]]) -> None:
    """The web API answers with the reference values: closed windows from Redis, one key at a
    time, and the windows still open (the sentinels')."""
    for window, size, step in gt.WINDOWS:
        for event_type in gt.EVENT_TYPES:
            status, body = worker.get(f"/v1/windows/{window}/closed?event_type={quote(event_type)}&limit=1000")
            assert status == 200, body
            want = sorted(((s, v) for (w, s, t), v in expected.rows.items() if w == window and t == event_type),
                          reverse=True)[:LATEST_N]
            assert body["closed"] == {event_type: [_row_json(window, s, event_type, v) for s, v in want]}
        # Open: only the sentinels' windows, one sentinel per partition, value 0.
        starts = [start for start in range(gt.SENTINEL_MS - gt.SENTINEL_MS % step - size + step,
                                           gt.SENTINEL_MS + 1, step)]
        status, body = worker.get(f"/v1/windows/{window}/open")
        assert status == 200, body
        assert body["complete"] is True
        assert body["open"] == [_row_json(window, s, "sentinel", (gt.PARTITIONS, 0.0, 0.0, 0.0)) for s in starts]
    for (window, start, event_type), values in expected.rows.items():
        status, body = worker.get(f"/v1/windows/{window}/value?event_type={quote(event_type)}&start={start}")
        assert (status, body["state"], body["row"]) == (200, "closed", _row_json(window, start, event_type, values))
    status, body = worker.get(f"/v1/windows/tumbling_1m/value?event_type=sentinel&start={_iso(starts[-1])}")
    assert (status, body["state"], body["row"]["count"]) == (200, "open", gt.PARTITIONS)
    assert worker.get("/v1/health/ready") == (200, {"status": "ready"})
    # Bad parameters and unknown names: 4xx with a JSON error, never a 500.
    for path, code in [("/v1/windows/nope/open", 404), ("/v1/windows/tumbling_1m/closed?limit=0", 400),
                       ("/v1/windows/tumbling_1m/closed?limit=x", 400), ("/v1/windows/tumbling_1m/value", 400),
                       ("/v1/windows/tumbling_1m/value?event_type=click&start=12", 400),
                       ("/v1/windows/tumbling_1m/value?event_type=click&start=yesterday", 400),
                       (f"/v1/windows/tumbling_1m/value?event_type=click&start={gt.SENTINEL_MS + 30_000}", 400),
                       (f"/v1/windows/tumbling_1m/value?event_type=nope&start={starts[-1]}", 404),
                       ("/v1/windows/tumbling_1m/value?event_type=click&start=%C2%B2", 400),  # "²"
                       ("/v1/windows/tumbling_1m/value?event_type=click&start=" + "9" * 5000, 400),
                       ("/v1/windows/tumbling_1m/value?event_type=click&start=0001-01-01T00:00%2B01:00", 400),
                       ("/v1/windows/tumbling_1m/open?limit=10001", 400),
                       ("/v1/windows/tumbling_1m/open?after=sentinel", 400),
                       ("/v1/windows/tumbling_1m/open?scope=all", 400), ("/v1/nothing/here", 404)]:
        status, body = worker.get(path)
        assert status == code and body["error"]["status"] == code and body["error"]["message"], (path, body)
    status, body = worker.get("/v1/status", method="POST")
    assert (status, body["error"]["status"]) == (405, 405)


def _check_metrics(worker: Worker, expected: gt.Expected, reasons: list[tuple[int, str]],
                   produced: list[gt.Produced]) -> None:
    samples = metric_samples(worker.metrics())
    per_partition = Counter(str(r.partition) for r in produced)
    for partition, count in per_partition.items():
        assert samples[("pipeline_events_consumed_total", (("partition", partition),))] == count
        assert samples[("pipeline_watermark_seconds", (("partition", partition),))] > 0
        assert ("pipeline_consumer_lag", (("partition", partition), ("topic", worker.env["TOPIC_EVENTS"]))) in samples
    assert samples[("pipeline_dead_letters_total", ())] == len(reasons)
    assert samples[("pipeline_late_events_total", ())] == sum(1 for _ in expected.late)
    assert samples[("pipeline_rows_exported_total", ())] == len(expected.rows)
    assert samples[("pipeline_window_close_delay_seconds_count", ())] > 0
    for sink, operation in (("s3", "archive"), ("s3", "aggregates"), ("redis", "windows")):
        labels = (("operation", operation), ("sink", sink))
        assert samples[("pipeline_sink_write_seconds_count", labels)] > 0
        assert samples[("pipeline_sink_errors_total", labels)] == 0
        assert samples[("pipeline_sink_retries_total", labels)] == 0
    assert samples[("pipeline_state_bytes", (("table", "ingest"),))] > 0
    assert samples[("pipeline_ready", ())] == 1


def _check_outage_metrics(worker: Worker) -> None:
    """The Redis outage shows in /metrics: failed attempts and retries of Redis writes only."""
    samples = metric_samples(worker.metrics())
    redis_writes = (("operation", "windows"), ("sink", "redis"))
    status = worker.status()
    assert samples[("pipeline_sink_retries_total", redis_writes)] == status["sink_retries"] >= 3
    assert samples[("pipeline_sink_errors_total", redis_writes)] >= 3
    assert samples[("pipeline_sink_retries_total", (("operation", "aggregates"), ("sink", "s3")))] == 0


def test_ground_truth(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _run_scenario(stack, names_for(unique_name), tmp_path, crash=False)


def test_an_explicit_copy_of_the_default_spec_gives_every_output_of_no_spec(stack: Endpoints, unique_name: str,
                                                                            tmp_path: Path) -> None:
    """AGGREGATIONS=deploy/aggregations/article.toml: the same run passes the same ground truth, and every
    output (S3 keys and bytes, Redis keys and values, both topics, the web API, the metrics' series) is
    the run's without AGGREGATIONS, but for the names each run is given."""
    snapshots: list[dict[str, Any]] = []
    spec = Path(__file__).resolve().parents[2] / "deploy" / "aggregations" / "article.toml"
    for label, extra in (("none", {}), ("copy", {"AGGREGATIONS": str(spec)})):
        (tmp_path / label).mkdir()
        _run_scenario(stack, names_for(f"{unique_name}-{label}"), tmp_path / label, extra_env=extra,
                      snapshot=snapshots)
    without, with_copy = snapshots
    assert without["s3"] and without["redis"] and without["dlq"] and without["late"] and without["api"]
    for part in without:
        assert with_copy[part] == without[part], part


def _without_wall_time(answer: tuple[int, Any]) -> tuple[int, Any]:
    """An API answer with its watermark's low mark only: the rest says how long ago it moved."""
    status, body = answer
    if isinstance(body, dict) and isinstance(body.get("watermark"), dict):
        body = {**body, "watermark": body["watermark"].get("low_ms")}
    return status, body


def _snapshot(stack: Endpoints, names: Names, worker: Worker) -> dict[str, Any]:
    """Every output of a run, with the run's own names (topics, bucket, Redis prefix) and the records' write times in
    dead-letter details replaced by placeholders: the window objects' keys and bytes, the raw archive's rows
    (its files are cut by time), every Redis key's type and value, the dead-letter and late records with their
    headers, the web API's answers and the metrics' series."""
    client = stack.s3_client()

    def plain(text: str) -> str:
        text = text.replace(names.app_id, "<app>")  # the topics' names and the internal topics' start with it
        # The latest time accepted is the record's write time plus MAX_CLOCK_SKEW: another in each run.
        return re.sub(r"(outside \[[0-9]+, )[0-9]+\]", r"\1<written + skew>]", text)

    s3 = {key: client.get_object(Bucket=names.bucket, Key=key)["Body"].read()
          for key in list_etags(client, names.bucket, "aggregated/")}
    archive = sorted((p, o, e) for rows in read_archive(client, names.bucket).values() for p, o, e in rows)
    redis = {}
    store = redis_client.Redis.from_url(stack.redis_url)
    try:
        for key in sorted(store.scan_iter(match=f"{names.redis_prefix}*".encode())):
            kind = store.type(key).decode()
            value: Any = {"hash": lambda k: store.hgetall(k), "zset": lambda k: store.zrange(k, 0, -1, withscores=True),
                          "string": lambda k: store.get(k)}[kind](key)
            redis[key.decode()[len(names.redis_prefix):]] = (kind, value)
    finally:
        store.close()
    topics = {}
    for label, topic in (("dlq", names.dlq), ("late", names.late)):
        # In offset order, without the offsets: transactions' commit markers take offsets of their own.
        records = sorted(run(read_topic(stack, topic)), key=lambda r: (r.partition, r.offset))
        topics[label] = [(r.partition, r.key, r.value, [(k, plain(v.decode())) for k, v in r.headers]) for r in records]
    api = {}
    for window, _size, _step in gt.WINDOWS:
        paths = [f"/v1/windows/{window}/open"] + [f"/v1/windows/{window}/closed?event_type={quote(t)}&limit=1000"
                                                  for t in gt.EVENT_TYPES]
        api.update({path: _without_wall_time(worker.get(path)) for path in paths})
    api["/v1/aggregations"] = _without_wall_time(worker.get("/v1/aggregations"))
    series = sorted({(name, tuple((k, plain(v)) for k, v in labels))
                     for name, labels in metric_samples(worker.metrics())})
    return {"s3": s3, "archive": archive, "redis": redis, **topics, "api": api, "metrics": series}


@pytest.mark.timeout(600)
def test_ground_truth_after_sigkill(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _run_scenario(stack, names_for(unique_name), tmp_path, crash=True)


@pytest.mark.timeout(600)
def test_ground_truth_through_redis_outage(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    redis = OwnRedis(tmp_path / "redis")
    redis.start()
    try:
        _run_scenario(stack, names_for(unique_name), tmp_path, redis=redis)
    finally:
        redis.stop()


@pytest.mark.timeout(600)
def test_ground_truth_with_a_2mb_record_among_20k(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    """The record is dead-lettered as oversized, cut to what the broker takes with its true size;
    nothing around it is lost or doubled (it used to crash the ingest agent)."""
    _run_scenario(stack, names_for(unique_name), tmp_path, per_partition=5_000, oversized=True)


@pytest.mark.timeout(600)
def test_a_send_failing_in_mid_batch_stops_the_worker_and_a_restart_is_exact(stack: Endpoints, unique_name: str,
                                                                             tmp_path: Path) -> None:
    """A fault injected into the 5th partials message sent (a flush sends one per stage-2 partition
    with partials, so this is in the middle of an early flush): the worker stops itself, and
    restarted it resumes from its durable state with exact results."""
    _run_scenario(stack, names_for(unique_name), tmp_path, fault="ingest.send@5")
