"""The batch layer end to end: a real worker on the embedded stack archives an event set spanning
several hours and a day boundary; `faust -A app batch` (a subprocess) computes the hourly and daily
rollups, which must equal a plain-Python reference exactly (distinct counts and nearest-rank
percentiles included). Late events then arrive for hours already sealed and processed; a batch run
is SIGKILLed in its middle, and the next run recomputes exactly the touched hours and their days.
A run after that writes no object at all. The worker's GET /v1/rollups answers the same rows as the
reference, and its /metrics the batch job's status summed over the runs, as their own summaries
report them."""

from __future__ import annotations

import math
import re
import signal
import subprocess
import time
from pathlib import Path

import duckdb
import groundtruth as gt
import pyarrow.dataset as ds
from batch_events import (
    BATCH_COMMAND,
    BATCH_DEADLINE_S,
    DAY_MS,
    HOUR_MS,
    SENTINEL_MS,
    START_MS,
    STEP_DEADLINE_S,
    Event,
    archived,
    decode,
    etags,
    lake_windows,
    late_events,
    on_time_events,
    sentinels,
    window_reference,
)
from helpers import metric_samples, wait_for
from pipeline_harness import (
    ROOT,
    Names,
    Worker,
    create_topics,
    names_for,
    produce,
    read_objects,
    run,
    web_port,
    worker_env,
)
from pyarrow import fs

from batch.periods import last_sealed_hour, parse_time
from devstack.stack import Endpoints
from formats.batch import parquet_to_rollups
from formats.lake import manifest_key, rollup_key
from testing.reference import nearest_rank

# -- the reference, in plain Python ----------------------------------------------------------


Row = tuple[str, int, int, str, int, float, float, float, float, int, float, float, float]


def reference(events: list[Event]) -> dict[str, list[Row]]:
    """Object key -> rows, for every hour and day holding events (sentinels excluded)."""
    periods: dict[tuple[str, int], dict[str, list[tuple[str, float]]]] = {}
    for user, event_type, event_ms, value in events:
        for kind, length in (("hourly", HOUR_MS), ("daily", DAY_MS)):
            start = event_ms - event_ms % length
            periods.setdefault((kind, start), {}).setdefault(event_type, []).append((user, value))
    expected: dict[str, list[Row]] = {}
    for (kind, start), by_type in periods.items():
        length = HOUR_MS if kind == "hourly" else DAY_MS
        rows = []
        for event_type in sorted(by_type):
            items = by_type[event_type]
            values = sorted(value for _, value in items)
            total = math.fsum(values)
            rows.append((kind, start, start + length, event_type, len(values), total, values[0], values[-1],
                         total / len(values), len({user for user, _ in items}), nearest_rank(values, 50),
                         nearest_rank(values, 95), nearest_rank(values, 99)))
        expected[rollup_key("", kind, start)] = rows
    return expected


def rollup_rows(body: bytes) -> list[Row]:
    return [(*row[:8], row.mean, *row[8:]) for row in parquet_to_rollups(body)]


def lake_rows(client: object, bucket: str) -> dict[str, list[Row]]:
    found = {}
    for prefix in ("aggregated/hourly/", "aggregated/daily/"):
        found.update(read_objects(client, bucket, prefix, rollup_rows))
    return found


# -- the batch command as a process -------------------------------------------------------


def run_batch(env: dict[str, str], log: Path, runs: list[Run] | None = None) -> str:
    started_ms = time.time_ns() // 1_000_000
    result = subprocess.run(BATCH_COMMAND, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=BATCH_DEADLINE_S)
    with open(log, "a") as out:
        out.write(result.stdout + result.stderr)
    assert result.returncode == 0, f"batch failed ({result.returncode}): {result.stdout}{result.stderr}"
    if runs is not None:
        runs.append(Run(started_ms, time.time_ns() // 1_000_000, result.stdout))
    return result.stdout


class Run:
    """A finished run: its wall-clock span and its output."""

    def __init__(self, started_ms: int, ended_ms: int, out: str) -> None:
        self.started_ms, self.ended_ms, self.out = started_ms, ended_ms, out

    def figure(self, pattern: str) -> int:
        """The number its summary line gives for `pattern` (a regex with one group)."""
        summary, = (line for line in self.out.splitlines() if line.startswith("batch: "))
        found = re.search(pattern, summary)
        assert found, f"{pattern!r} not in {summary!r}"
        return int(found.group(1))


def kill_batch_mid_run(env: dict[str, str], log: Path) -> list[str]:
    """SIGKILL the run as soon as it reports its first period written (its output is in S3, its
    manifest not yet, and the other periods are still to do)."""
    process = subprocess.Popen(BATCH_COMMAND, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    seen = []
    assert process.stdout is not None
    for line in process.stdout:
        seen.append(line)
        if " rows from " in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)
    with open(log, "a") as out:
        out.write("".join(seen) + "[SIGKILL]\n")
    assert process.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {''.join(seen)}"
    return seen


# -- the test -------------------------------------------------------------------------------


def test_batch_rollups_equal_the_reference_with_late_data_and_a_sigkill(stack: Endpoints, unique_name: str,
                                                                        tmp_path: Path) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    env = worker_env(stack, names, tmp_path / "state", web_port())
    worker = Worker(env, tmp_path / "worker.log")
    batch_log = tmp_path / "batch.log"
    worker.start()
    try:
        phase1 = on_time_events()
        run(produce(stack, names.events, phase1 + sentinels()))
        wait_for(lambda: worker.status()["frontier_ms"] == SENTINEL_MS - gt.LATENESS_MS, timeout_s=STEP_DEADLINE_S,
                 what="the frontier to pass both days", detail=worker.status)
        wait_for(lambda: archived(client, names) == len(phase1) + gt.PARTITIONS, timeout_s=STEP_DEADLINE_S,
                 what="every event in the raw archive")
        speed = window_reference(decode(phase1), [])  # the batch run restates no window before stage 2 exports it
        wait_for(lambda: len(lake_windows(client, names.bucket)) == len(speed), timeout_s=STEP_DEADLINE_S,
                 what="stage 2 to export every window")

        # Run 1: every hour and both days, sealed.
        runs: list[Run] = []  # those that ended well
        out = run_batch(env, batch_log, runs)
        expected = reference(decode(phase1))
        assert len([k for k in expected if "/hourly/" in k]) == 5 and len([k for k in expected if "/daily/" in k]) == 2
        # 14 for the rollups (an output and a manifest per period), 7 restatement manifests (nothing to
        # restate): the 5 hours with events, 20:00 (its window [20:59:30, 21:00:30) spans 21:00) and
        # 23:00 on Nov 2 (its last window spans the sentinels' hour).
        assert "5 hours and 2 days computed" in out and "21 objects written" in out, out
        assert lake_rows(client, names.bucket) == expected
        first = etags(client, names.bucket)

        # Late events for sealed, processed hours: new raw files in their hour folders.
        phase2 = late_events()
        run(produce(stack, names.events, phase2))
        wait_for(lambda: archived(client, names) == len(phase1) + len(phase2) + gt.PARTITIONS,
                 timeout_s=STEP_DEADLINE_S, what="the late events in the raw archive")

        # Run 2 is killed after its first period's output; run 3 completes it exactly.
        kill_batch_mid_run(env, batch_log)
        out = run_batch(env, batch_log, runs)
        assert not re.search(r"\b0 objects written", out), f"the killed run had left nothing to do: {out}"
        expected = reference(decode(phase1 + phase2))
        assert lake_rows(client, names.bucket) == expected
        touched = {rollup_key("", "hourly", START_MS - START_MS % HOUR_MS + h * HOUR_MS) for h in (0, 1, 3)} | {
            rollup_key("", "daily", START_MS - START_MS % DAY_MS + d * DAY_MS) for d in (0, 1)}
        now = etags(client, names.bucket)
        changed = {key for key in first if key.startswith(("aggregated/hourly/", "aggregated/daily/"))
                   and now[key] != first[key]}
        assert changed == touched, "only the hours with late files and their days are recomputed"
        for key in touched:
            kind, start = ("hourly" if "/hourly/" in key else "daily"), int(key.rsplit("-", 1)[1].split(".")[0])
            assert manifest_key("", kind, start) in now

        # Run 4: nothing new, nothing written.
        out = run_batch(env, batch_log, runs)
        assert re.search(r"\b0 hours and 0 days computed, 7 up to date, 2 not sealed yet; 0 objects written", out), out
        assert etags(client, names.bucket) == now
        _check_hive_readers(stack, names, expected)
        _check_rollups_api(worker, expected)

        # A foreign object in a processed hour: reported, skipped, recorded; the rows stay exact.
        hour23 = "events/year=2026/month=11/day=01/hour=23/"
        client.put_object(Bucket=names.bucket, Key=f"{hour23}notes.txt", Body=b"not a raw file")
        out = run_batch(env, batch_log, runs)
        assert f"skipped s3://{names.bucket}/{hour23}notes.txt: foreign name" in out, out
        assert "1 hour and 1 day computed" in out, out
        assert lake_rows(client, names.bucket) == expected

        # A sealed hour whose only raw file cannot be read: one line, a non-zero exit.
        key = "events/year=2026/month=11/day=02/hour=05/part-00000-00000000000000000000.parquet"
        client.put_object(Bucket=names.bucket, Key=key, Body=b"garbage")
        failed_from_ms = time.time_ns() // 1_000_000
        result = subprocess.run(BATCH_COMMAND, cwd=ROOT, env=env, capture_output=True, text=True,
                                timeout=BATCH_DEADLINE_S)
        failed = Run(failed_from_ms, time.time_ns() // 1_000_000, result.stdout)
        assert result.returncode == 1, result.stdout + result.stderr
        line, = result.stderr.splitlines()
        assert line.startswith(f"error: hour 2026-11-02T05Z is sealed but cannot be read: none of its 1 raw files "
                               f"could be counted (s3://{names.bucket}/{key}: not a raw archive file"), line
        _check_batch_metrics(worker, runs, failed)
    finally:
        worker.stop()


def _check_hive_readers(stack: Endpoints, names: Names, expected: dict[str, list[Row]]) -> None:
    """Both datasets read as Hive-partitioned Parquet by pyarrow, and queried by DuckDB."""
    s3 = fs.S3FileSystem(endpoint_override=stack.s3_endpoint, access_key=stack.credentials["AWS_ACCESS_KEY_ID"],
                         secret_key=stack.credentials["AWS_SECRET_ACCESS_KEY"], region="us-east-1")
    for kind, columns in (("hourly", {"year", "month", "day", "hour"}), ("daily", {"year", "month", "day"})):
        dataset = ds.dataset(f"{names.bucket}/aggregated/{kind}", filesystem=s3, format="parquet", partitioning="hive")
        table = dataset.to_table()
        assert columns <= set(table.column_names)
        want = sorted(row for key, rows in expected.items() if f"/{kind}/" in key for row in rows)
        assert table.num_rows == len(want)
        got = duckdb.sql('SELECT event_type, "count", distinct_users, p99 FROM dataset '
                         "ORDER BY period_start, event_type").fetchall()
        assert got == [(r[3], r[4], r[9], r[12]) for r in sorted(want, key=lambda r: (r[1], r[3]))]


def _check_rollups_api(worker: Worker, expected: dict[str, list[Row]]) -> None:
    """GET /v1/rollups answers the reference's rows of its range, by type too, and 400 for a bad range."""
    def api_rows(period: str, query: str) -> list[Row]:
        status, body = worker.get(f"/v1/rollups/{period}?{query}")
        assert status == 200 and body["skipped"] == [], body
        return [(r["period"], r["period_start_ms"], r["period_end_ms"], r["event_type"], r["count"], r["sum"], r["min"],
                 r["max"], r["mean"], r["distinct_users"], r["p50"], r["p95"], r["p99"]) for r in body["rollups"]]

    def want(kind: str, event_type: str | None = None) -> list[Row]:
        return sorted((row for key, rows in expected.items() if f"/{kind}/" in key for row in rows
                       if event_type is None or row[3] == event_type), key=lambda r: (r[1], r[3]))

    assert api_rows("hourly", "from=2026-11-01T21:00Z&to=2026-11-02T02:00Z") == want("hourly")
    assert api_rows("daily", "from=2026-11-01&to=2026-11-03") == want("daily")
    refunds = api_rows("hourly", "from=2026-11-01T21:30Z&to=2026-11-02T02:00Z&event_type=refund")
    assert refunds == want("hourly", "refund") and refunds
    # Half-open, from rounded down to its hour: 22:xx alone.
    assert api_rows("hourly", "from=2026-11-01T22:59Z&to=2026-11-01T23:00Z") == [
        r for r in want("hourly") if r[1] == parse_time("2026-11-01T22:00Z")]
    status, body = worker.get("/v1/rollups/hourly?from=2026-11-02&to=2026-11-01")
    assert (status, body["error"]["status"]) == (400, 400), body


def _check_batch_metrics(worker: Worker, runs: list[Run], failed: Run) -> None:
    """The worker exports the batch status hash: each count the sum of what the runs that ended well said,
    their times within the runs' wall-clock spans, and the newest sealed hour the bound they found."""
    def exported() -> dict[str, float] | None:
        got = {}
        for (name, labels), value in metric_samples(worker.metrics()).items():
            if name.startswith("pipeline_batch_"):  # labels as {value}: runs_total{ok}
                got[name + "".join(f"{{{label_value}}}" for _, label_value in labels)] = value
        return got if got.get("pipeline_batch_runs_total{failed}") == 1 else None

    got = wait_for(exported, timeout_s=STEP_DEADLINE_S, what="the worker to export the batch status")
    bound = re.search(r"sealed: every hour ending by (\S+)", failed.out)
    assert bound, failed.out
    last = runs[-1]
    assert last.started_ms / 1000 <= got["pipeline_batch_last_success_seconds"] <= last.ended_ms / 1000
    assert 0 < got["pipeline_batch_duration_seconds"] <= (last.ended_ms - last.started_ms) / 1000
    assert failed.started_ms / 1000 <= got["pipeline_batch_last_failure_seconds"] <= failed.ended_ms / 1000
    counts = {name: value for name, value in got.items() if "_total" in name}
    assert counts == {
        "pipeline_batch_runs_total{ok}": len(runs),
        "pipeline_batch_runs_total{failed}": 1,
        "pipeline_batch_periods_computed_total": sum(
            r.figure(r"(\d+) hours? and") + r.figure(r"(\d+) days? computed") for r in runs),
        "pipeline_batch_windows_restated_total": sum(r.figure(r"restated in (\d+) windows?") for r in runs),
        "pipeline_batch_rows_restated_total": sum(r.figure(r"(\d+) rows? restated") for r in runs),
        "pipeline_batch_objects_written_total": sum(r.figure(r"(\d+) objects? written") for r in runs),
        "pipeline_batch_objects_skipped_total": sum(r.figure(r"(\d+) foreign objects? skipped") for r in runs),
    }
    assert counts["pipeline_batch_rows_restated_total"] > 0  # the late events were restated
    assert got["pipeline_batch_last_sealed_hour_seconds"] * 1000 == last_sealed_hour(parse_time(bound.group(1)))
