"""The batch layer's pure logic with time as data: periods, sealing, manifest diff, rollup math,
reading raw files, and whole runs against an in-memory lake (crashes at every write included);
the rollups read back as the web API reads them (sinks/rollups.py)."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.inputs import FOREIGN_NAME, ROLLUP_INPUT_SCHEMA, PeriodInputs
from batch.job import Plan, UnreadableHourError, run_batch
from batch.manifest import reason_to_process
from batch.periods import Period, last_sealed_hour, parse_time, periods_overlapping
from batch.report import RunReport
from batch.rollup import rollup
from batch.sealing import is_sealed, sealed_until, uncovered
from batch.spark_job import plan_inputs
from commands.batch import long_range_refusal
from formats.batch import (
    Manifest,
    RollupRow,
    manifest_from_json,
    manifest_to_json,
    parquet_to_rollups,
    rollups_to_parquet,
)
from formats.lake import DAY_MS, HOUR_MS, archive_key, manifest_key, parse_raw_key, rollup_folders, rollup_key
from sinks.lake import ListingCache, ObjectCache
from sinks.rollups import RollupRead, read_rollups
from testing.fakes import MemoryLake
from testing.reference import nearest_rank

DAY = parse_time("2026-11-01")  # a Sunday, 00:00 UTC
HOSTILE = ["../=x/é", "a:b*c?[]{}|z", "_hidden", "line\nbreak", "😀" * 50]


# -- periods and --from/--to ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-11-01", DAY),
    ("2026-11-01T22:00Z", DAY + 22 * HOUR_MS),
    ("2026-11-01T22:00:00+00:00", DAY + 22 * HOUR_MS),
    ("2026-11-01T23:30+01:00", DAY + 22 * HOUR_MS + 30 * 60_000),
    ("2026-11-01T22:00", DAY + 22 * HOUR_MS),  # no zone means UTC, as for events
    (str(DAY + 5), DAY + 5),
])
def test_parse_time(text: str, expected: int) -> None:
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01", "1999-12-31", "-5", "1e12", "2026-11-01T25:00"])
def test_parse_time_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_time(text)


def test_periods() -> None:
    hour = Period.hourly(DAY + 22 * HOUR_MS + 59_999)
    assert (hour.start_ms, hour.end_ms, hour.label()) == (DAY + 22 * HOUR_MS, DAY + 23 * HOUR_MS, "hour 2026-11-01T22Z")
    day = Period.daily(DAY + 5 * HOUR_MS)
    assert (day.start_ms, day.end_ms, len(day.hours()), day.label()) == (DAY, DAY + DAY_MS, 24, "day 2026-11-01")
    assert sorted([day, hour], key=Period.order) == [hour, day]
    with pytest.raises(ValueError):
        Period("hourly", DAY + 1)
    with pytest.raises(ValueError):
        Period("weekly", DAY)


def test_periods_overlapping_is_half_open() -> None:
    hours = [DAY + h * HOUR_MS for h in range(4)]
    assert periods_overlapping(hours, None, None) == hours
    assert periods_overlapping(hours, DAY + HOUR_MS + 1, DAY + 3 * HOUR_MS) == hours[1:3]
    assert periods_overlapping(hours, DAY + HOUR_MS, DAY + 2 * HOUR_MS) == hours[1:2]


# -- sealing ------------------------------------------------------------------------------


def test_sealed_once_the_archive_reaches_what_stage_1_had_read() -> None:
    fold_then = {0: 100, 1: 50, 2: None}  # partition 2 had read nothing
    assert uncovered(fold_then, {0: 100, 1: 49, 2: None}) == [1]
    assert uncovered(fold_then, {0: 100, 1: 50}) == []
    assert uncovered(fold_then, {0: 99}) == [0, 1]  # an unknown archive position is not coverage
    assert sealed_until(DAY + 23 * HOUR_MS, [1]) is None
    assert sealed_until(None, []) is None
    bound = sealed_until(DAY + 23 * HOUR_MS, [])
    assert bound == DAY + 23 * HOUR_MS
    assert is_sealed(Period.hourly(DAY + 22 * HOUR_MS), bound, processed_before=False)  # ends exactly at W
    assert not is_sealed(Period.hourly(DAY + 23 * HOUR_MS), bound, processed_before=False)
    assert not is_sealed(Period.daily(DAY), bound, processed_before=False)
    assert is_sealed(Period.daily(DAY), DAY + DAY_MS, processed_before=False)
    # Processed once, sealed for good: late files are handled even when no bound is known.
    assert is_sealed(Period.hourly(DAY), None, processed_before=True)


# -- manifest diff ------------------------------------------------------------------------


def _manifest(inputs: dict[str, str], output: str | None = "out") -> Manifest:
    return Manifest("hourly", DAY, DAY + HOUR_MS, inputs, {}, 3, 1, output)


def test_reason_to_process() -> None:
    old = _manifest({"a": "1", "b": "2"})
    assert reason_to_process(None, {"a": "1"}, output_present=False) == "not processed yet"
    assert reason_to_process(old, {"a": "1", "b": "2"}, output_present=True) is None
    assert reason_to_process(old, {"a": "1", "b": "2", "c": "3"}, output_present=True) == \
        "inputs changed: 1 new object(s)"
    assert reason_to_process(old, {"a": "9"}, output_present=True) == "inputs changed: 1 changed, 1 removed object(s)"
    assert reason_to_process(old, {"a": "1", "b": "2"}, output_present=False) == "its output out is missing"
    assert reason_to_process(_manifest({"a": "1"}, None), {"a": "1"}, output_present=False) is None


def test_manifest_round_trip_is_deterministic() -> None:
    manifest = Manifest("daily", DAY, DAY + DAY_MS, {"events/k": "e1"}, {"events/x": FOREIGN_NAME}, 5, 2, "o")
    data = manifest_to_json(manifest)
    assert manifest_from_json(data) == manifest
    assert manifest_to_json(manifest_from_json(data)) == data
    for bad in (b"", b"[]", b'{"format": 2}', b'{"format": 1}'):
        with pytest.raises(ValueError):
            manifest_from_json(bad)


# -- rollup math against a plain-Python reference -------------------------------------------


def reference(period: Period, events: Iterable[tuple[str, str, float]]) -> list[RollupRow]:
    groups: dict[str, list[tuple[str, float]]] = {}
    for user, event_type, value in events:
        groups.setdefault(event_type, []).append((user, value))
    rows = []
    for event_type, items in sorted(groups.items()):
        values = [v for _, v in items]
        rows.append(RollupRow(period.kind, period.start_ms, period.end_ms, event_type, len(values), math.fsum(values),
                              min(values), max(values), len({u for u, _ in items}), nearest_rank(values, 50),
                              nearest_rank(values, 95), nearest_rank(values, 99)))
    return rows


def _reader(events: list[tuple[str, str, float]], chunk: int = 7) -> pa.RecordBatchReader:
    rows = [{"user_id": u, "event_type": t, "value": v} for u, t, v in events]
    batches = [pa.RecordBatch.from_pylist(rows[i:i + chunk], schema=ROLLUP_INPUT_SCHEMA)
               for i in range(0, len(rows), chunk)]
    return pa.RecordBatchReader.from_batches(ROLLUP_INPUT_SCHEMA, batches)


@pytest.mark.parametrize("seed", range(8))
def test_rollup_equals_the_reference(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 19, 20, 21, 100, 101, 997])
    events = [(rng.choice(["u1", "u2", "../u", *HOSTILE]), rng.choice(["click", "view", *HOSTILE]),
               rng.randrange(-400, 400) / 4) for _ in range(n)]
    period = Period.hourly(DAY)
    assert rollup(period, _reader(events)) == reference(period, events)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 21)]  # 1..20
    row, = rollup(Period.daily(DAY), _reader([("u", "t", v) for v in reversed(values)]))
    # ceil(0.5 * 20) = 10th, ceil(0.95 * 20) = 19th, ceil(0.99 * 20) = 20th smallest
    assert (row.p50, row.p95, row.p99) == (10.0, 19.0, 20.0)
    assert (row.count, row.sum, row.mean, row.min, row.max, row.distinct_users) == (20, 210.0, 10.5, 1.0, 20.0, 1)
    one, = rollup(Period.daily(DAY), _reader([("u", "t", -0.5)]))
    assert (one.p50, one.p95, one.p99) == (-0.5, -0.5, -0.5)


def test_rollup_parquet_round_trip() -> None:
    period = Period.hourly(DAY)
    rows = reference(period, [("u1", t, 1.25) for t in HOSTILE] + [("u2", "click", 2.0)])
    data = rollups_to_parquet(list(reversed(rows)))
    assert parquet_to_rollups(data) == sorted(rows, key=lambda r: r.event_type)
    assert rollups_to_parquet(rows) == data


# -- names and raw files -------------------------------------------------------------------


def test_names() -> None:
    assert rollup_key("p/", "hourly", DAY + 22 * HOUR_MS) == \
        f"p/aggregated/hourly/year=2026/month=11/day=01/hour=22/hourly-{DAY + 22 * HOUR_MS}.parquet"
    assert rollup_key("", "daily", DAY) == f"aggregated/daily/year=2026/month=11/day=01/daily-{DAY}.parquet"
    assert manifest_key("", "daily", DAY) == f"batch/manifests/daily/year=2026/month=11/day=01/daily-{DAY}.json"
    key = archive_key("p/", DAY + 22 * HOUR_MS + 5, 3, 42)
    parsed = parse_raw_key("p/", key)
    assert (parsed.hour_start_ms, parsed.partition, parsed.start_offset) == (DAY + 22 * HOUR_MS, 3, 42)
    assert not parse_raw_key("", "events/year=2026/month=11/day=01/hour=22/notes.txt").archive_name
    name = "part-00000-00000000000000000000.parquet"
    for foreign in ("events/x.parquet", f"events/year=2026/month=02/day=30/hour=01/{name}",
                    f"events/year=2026/month=11/day=1/hour=22/{name}"):
        assert parse_raw_key("", foreign).hour_start_ms is None


def _events(hour: int, n: int, seed: int) -> list[tuple[str, str, int, float]]:
    rng = random.Random(seed)
    start = DAY + hour * HOUR_MS
    return [(rng.choice(["u1", "u2", "u3", *HOSTILE]), rng.choice(["click", "view", *HOSTILE]),
             start + rng.randrange(HOUR_MS), rng.randrange(-400, 400) / 4) for _ in range(n)]


def _expected(files: list[list[tuple[str, str, int, float]]]) -> dict[str, list[RollupRow]]:
    flat = [e for f in files for e in f]
    found = {}
    for period in sorted({Period.hourly(e[2]) for e in flat} | {Period.daily(e[2]) for e in flat}, key=Period.order):
        inside = [(u, t, v) for u, t, ms, v in flat if period.start_ms <= ms < period.end_ms]
        found[rollup_key("", period.kind, period.start_ms)] = reference(period, inside)
    return found


def _run(lake: MemoryLake, bound: int | None = DAY + 3 * DAY_MS,
         plan: Plan | None = None) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    return run_batch(lake, sealed_until_ms=bound, plan=plan or Plan(), say=lines.append), lines


def _lake_with_two_days() -> tuple[MemoryLake, list[list[tuple[str, str, int, float]]]]:
    lake = MemoryLake()
    files = [_events(22, 40, 1), _events(23, 30, 2), _events(24, 25, 3), _events(22, 5, 4)]
    for i, events in enumerate(files):
        lake.archive(i % 2, 100 * i, events)
    return lake, files


def test_a_run_computes_sealed_hours_and_days_then_writes_nothing() -> None:
    lake, files = _lake_with_two_days()
    report, _ = _run(lake)
    assert [p.label() for p in report.processed] == ["hour 2026-11-01T22Z", "hour 2026-11-01T23Z",
                                                     "hour 2026-11-02T00Z", "day 2026-11-01", "day 2026-11-02"]
    assert report.objects_written == 10  # an output and a manifest per period
    assert lake.rollups() == _expected(files)
    before = dict(lake.objects)
    again, _ = _run(lake)
    assert (again.objects_written, again.up_to_date, again.processed) == (0, 5, [])
    assert lake.objects == before


def test_a_run_reports_its_progress_one_step_per_period() -> None:
    lake, _ = _lake_with_two_days()
    steps: list[tuple[int, int]] = []
    run_batch(lake, sealed_until_ms=DAY + 3 * DAY_MS, plan=Plan(), say=lambda line: None,
              progress=lambda *step: steps.append(step))
    assert steps == [(n, 5) for n in range(1, 6)]  # three hours, two days


def read_all(lake: MemoryLake, period: str, from_ms: int, to_ms: int, event_type: str | None = None,
             limit: int = 1_000_000, cache: ObjectCache[list[RollupRow]] | None = None,
             listings: ListingCache | None = None) -> RollupRead:
    return read_rollups(lake, ObjectCache() if cache is None else cache,
                        ListingCache(0) if listings is None else listings, period, from_ms, to_ms, event_type, limit)


def test_the_rollups_read_back_by_range() -> None:
    lake, files = _lake_with_two_days()
    _run(lake)
    lake.raw_put("aggregated/hourly/year=2026/month=11/day=01/hour=23/notes.txt", b"foreign: never read")
    everything = sorted((row for rows in _expected(files).values() for row in rows if row.period == "hourly"),
                        key=lambda r: (r.period_start_ms, r.event_type))
    got = read_all(lake, "hourly", DAY, DAY + 2 * DAY_MS)
    assert (got.rows, got.skipped, got.truncated) == (everything, [], False)
    # Half-open, from rounded down to its hour: 22:30 to 24:00 is hours 22 and 23.
    got = read_all(lake, "hourly", DAY + 22 * HOUR_MS + 1_800_000, DAY + 24 * HOUR_MS)
    assert got.rows == [r for r in everything if r.period_start_ms < DAY + 24 * HOUR_MS]
    days = read_all(lake, "daily", DAY - 40 * DAY_MS, DAY + DAY_MS)
    assert [(r.period_start_ms, r.event_type) for r in days.rows] == sorted(
        (r.period_start_ms, r.event_type) for r in _expected(files)[rollup_key("", "daily", DAY)])
    assert read_all(lake, "daily", DAY + 2 * DAY_MS, DAY + 9 * DAY_MS).rows == []
    # One event type, and a limit: the first rows in (period, type) order, and whether there were more.
    one = everything[0].event_type
    assert read_all(lake, "hourly", DAY, DAY + 2 * DAY_MS, one).rows == [r for r in everything if r.event_type == one]
    for limit in range(1, len(everything) + 1):
        got = read_all(lake, "hourly", DAY, DAY + 2 * DAY_MS, limit=limit)
        assert (got.rows, got.truncated) == (everything[:limit], limit < len(everything)), limit
    # An object in a rollup's place that is not one: left out and named, the others still read.
    broken = rollup_key("", "hourly", DAY + 23 * HOUR_MS)
    lake.raw_put(broken, b"garbage")
    got = read_all(lake, "hourly", DAY, DAY + 2 * DAY_MS)
    assert (got.rows, got.skipped) == ([r for r in everything if r.period_start_ms != DAY + 23 * HOUR_MS], [broken])


def test_rollups_are_read_once_per_etag_and_only_as_far_as_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    lake, files = _lake_with_two_days()
    _run(lake)
    hours = sorted(k for k in lake.objects if k.startswith("aggregated/hourly/") and k.endswith(".parquet"))
    first_hour = _expected(files)[hours[0]]
    cache: ObjectCache[list[RollupRow]] = ObjectCache()
    clock = [0.0]
    listings = ListingCache(10.0, lambda: clock[0])
    lake.lists.clear()
    lake.gets.clear()

    def read() -> RollupRead:
        return read_all(lake, "hourly", DAY + 22 * HOUR_MS, DAY + 24 * HOUR_MS, cache=cache, listings=listings)

    got = read()  # one day folder: one LIST, a GET per hour
    assert (len(lake.lists), len(lake.gets)) == (1, 2)
    # The same request again: no LIST within the listing's 10 s, one after; no GET either way.
    assert (read(), len(lake.lists), len(lake.gets)) == (got, 1, 2)
    clock[0] += 10.0
    assert (read(), len(lake.lists), len(lake.gets)) == (got, 2, 2)
    # A restated hour has a new ETag: once listed again, read again, and only it.
    body, _ = lake.objects[hours[1]]
    lake.raw_put(hours[1], body)
    assert read() == got and lake.gets[2:] == []  # the listing of 0 s ago still stands
    clock[0] += 10.0
    assert read() == got and lake.gets[2:] == [hours[1]]
    # A limit the first hour fills: the next hours are not read at all (fresh cache; GETs one at a time,
    # instead of READ_THREADS, so that the three hours are three rounds).
    monkeypatch.setattr("sinks.lake.READ_THREADS", 1)
    lake.gets.clear()
    got = read_all(lake, "hourly", DAY, DAY + 2 * DAY_MS, limit=len(first_hour) - 1)
    assert (got.truncated, lake.gets) == (True, [hours[0]])


def test_the_object_cache_is_bounded_in_count_and_bytes() -> None:
    cache: ObjectCache[str] = ObjectCache(size=3, max_bytes=100)
    for i in range(4):
        cache.put(f"k{i}", "e", f"v{i}", 10)
    assert [cache.get(f"k{i}", "e") for i in range(4)] == [None, "v1", "v2", "v3"]
    assert cache.get("k1", "other etag") is None
    cache.put("big", "e", "too big", 101)
    assert cache.get("big", "e") is None and cache.get("k3", "e") == "v3"
    cache.put("most", "e", "most", 85)  # 3 x 10 + 85 > 100 bytes: the least recently used go until it fits
    assert [cache.get(k, "e") for k in ("k1", "k2", "k3", "most")] == [None, None, "v3", "most"]


def test_rollup_folders_span_days_or_months() -> None:
    assert rollup_folders("p/", "hourly", DAY + 22 * HOUR_MS, DAY + DAY_MS + HOUR_MS) == [
        "p/aggregated/hourly/year=2026/month=11/day=01/", "p/aggregated/hourly/year=2026/month=11/day=02/"]
    assert rollup_folders("", "daily", parse_time("2026-11-30"), parse_time("2027-01-01")) == [
        "aggregated/daily/year=2026/month=11/", "aggregated/daily/year=2026/month=12/",
        "aggregated/daily/year=2027/month=01/"]
    assert rollup_folders("", "hourly", DAY, DAY) == ["aggregated/hourly/year=2026/month=11/day=01/"]
    with pytest.raises(ValueError, match="unknown rollup period"):
        rollup_folders("", "weekly", DAY, DAY)


def test_the_last_sealed_hour_ends_by_the_bound() -> None:
    assert last_sealed_hour(DAY + 23 * HOUR_MS) == DAY + 22 * HOUR_MS
    assert last_sealed_hour(DAY + 23 * HOUR_MS + 59_999) == DAY + 22 * HOUR_MS


def test_only_sealed_periods_are_computed() -> None:
    lake, _ = _lake_with_two_days()
    report, _ = _run(lake, bound=DAY + 23 * HOUR_MS + 1)  # only hour 22 ends by then
    assert [p.label() for p in report.processed] == ["hour 2026-11-01T22Z"]
    assert len(report.not_sealed) == 4
    assert _run(lake, bound=None)[0].processed == []


def test_a_late_file_recomputes_its_hour_and_day_only() -> None:
    lake, files = _lake_with_two_days()
    _run(lake)
    etags = lake.list_etags("aggregated/")
    late = _events(23, 3, 9)
    lake.archive(1, 10_000, late)  # a day-late event's file, in an hour processed already
    report, _ = _run(lake, bound=None)  # sealed by its manifest even when no bound is known
    assert [p.label() for p in report.processed] == ["hour 2026-11-01T23Z", "day 2026-11-01"]
    assert lake.rollups() == _expected([*files, late])
    changed = {k for k, e in lake.list_etags("aggregated/").items() if etags[k] != e}
    assert changed == {rollup_key("", "hourly", DAY + 23 * HOUR_MS), rollup_key("", "daily", DAY)}


@pytest.mark.parametrize("crash_at", range(1, 11))
def test_a_crash_at_any_write_is_completed_by_the_next_run(crash_at: int) -> None:
    lake, files = _lake_with_two_days()
    lake.crash_at = crash_at
    with pytest.raises(SystemExit):
        _run(lake)
    lake.crash_at = None
    report, _ = _run(lake)
    assert report.objects_written > 0
    assert lake.rollups() == _expected(files)
    clean, _ = _lake_with_two_days()
    _run(clean)
    assert {k: body for k, (body, _) in lake.objects.items()} == {k: body for k, (body, _) in clean.objects.items()}
    assert _run(lake)[0].objects_written == 0


def test_foreign_objects_are_reported_and_never_counted() -> None:
    lake, files = _lake_with_two_days()
    hour = "events/year=2026/month=11/day=01/hour=22/"
    lake.raw_put(f"{hour}notes.txt", b"hello")
    lake.raw_put(f"{hour}part-00009-00000000000000000000.parquet", b"not parquet")
    other = MemoryLake()
    misplaced = other.archive(2, 0, _events(21, 3, 5))  # hour 21's rows under hour 22's folder
    lake.raw_put(f"{hour}part-00002-00000000000000000000.parquet", other.objects[misplaced][0])
    lake.raw_put("events/stray.parquet", b"x")
    report, lines = _run(lake)
    assert lake.rollups() == _expected(files)
    assert report.skipped_objects == 4  # the stray, and the three in hour 22 (met again by its day)
    assert any("events/stray.parquet: foreign object" in line for line in lines)
    manifest = manifest_from_json(lake.get_bytes(manifest_key("", "hourly", DAY + 22 * HOUR_MS)))
    assert sorted(manifest.skipped) == [f"{hour}notes.txt", f"{hour}part-00002-00000000000000000000.parquet",
                                        f"{hour}part-00009-00000000000000000000.parquet"]
    assert manifest.skipped[f"{hour}notes.txt"] == FOREIGN_NAME
    assert manifest.skipped[f"{hour}part-00002-00000000000000000000.parquet"] == "event times outside its hour folder"
    assert manifest.skipped[f"{hour}part-00009-00000000000000000000.parquet"].startswith("not a raw archive file")
    assert len(manifest.inputs) == 5 and manifest.events == 45
    assert _run(lake)[0].objects_written == 0  # skipped objects are part of the listing: nothing to redo


def test_a_sealed_hour_that_cannot_be_read_at_all_stops_the_run() -> None:
    lake = MemoryLake()
    lake.raw_put("events/year=2026/month=11/day=01/hour=05/part-00000-00000000000000000000.parquet", b"garbage")
    with pytest.raises(UnreadableHourError, match=r"^error: hour 2026-11-01T05Z is sealed but cannot be read"):
        _run(lake)
    assert lake.puts == 0


def test_backfill_recomputes_its_range_even_when_up_to_date() -> None:
    lake, files = _lake_with_two_days()
    _run(lake)
    report, _ = _run(lake, plan=Plan(DAY + 23 * HOUR_MS, DAY + 24 * HOUR_MS))
    assert [p.label() for p in report.processed] == ["hour 2026-11-01T23Z", "day 2026-11-01"]
    assert lake.rollups() == _expected(files)


def test_check_raw_table_partition() -> None:
    lake = MemoryLake()
    key = lake.archive(1, 7, _events(3, 2, 1))
    moved = key.replace("part-00001-", "part-00002-")
    inputs = PeriodInputs("", {moved: "e"}, lambda _k: lake.objects[key][0])
    assert list(inputs.batches()) == []
    assert inputs.skipped == {moved: "rows of another partition than 2"}


def test_check_raw_table_nulls() -> None:
    lake = MemoryLake()
    key = lake.archive(1, 7, _events(3, 2, 1))
    table = pq.read_table(pa.BufferReader(lake.objects[key][0]))
    values = pa.array([None, *table.column("value").to_pylist()[1:]], type=pa.float64())
    with_null = table.set_column(table.schema.get_field_index("value"), "value", values)
    sink = pa.BufferOutputStream()
    pq.write_table(with_null, sink)
    inputs = PeriodInputs("", {key: "e"}, lambda _k: sink.getvalue().to_pybytes())
    assert list(inputs.batches()) == []
    assert inputs.skipped == {key: "null values, which the archiver never writes (1)"}


def test_spark_job_selects_the_embedded_jobs_periods_and_files() -> None:
    """batch/spark_job.plan_inputs: the hours overlapping the range, their whole days, foreign names skipped."""
    hour = DAY + 23 * HOUR_MS
    keys = [archive_key("", DAY + 5 * HOUR_MS, 0, 0), archive_key("", hour, 0, 9),
            archive_key("", hour + HOUR_MS, 1, 0),
            "events/year=2026/month=11/day=01/hour=23/notes.txt", "events/README"]
    plan = plan_inputs(sorted(keys), hour, hour + HOUR_MS)
    assert (list(plan.hours), list(plan.days)) == ([hour], [DAY])
    assert sorted(plan.files) == sorted(keys[:2])  # the whole day is read; the next day is not
    assert plan.files[keys[1]] == parse_raw_key("", keys[1])
    assert plan.skipped == {keys[3]: FOREIGN_NAME, keys[4]: "foreign object, not in an hour folder "
                                                            "events/year=YYYY/month=MM/day=DD/hour=HH/"}
    everything = plan_inputs(sorted(keys), None, None)
    assert (list(everything.hours), list(everything.days)) == ([DAY + 5 * HOUR_MS, hour, hour + HOUR_MS],
                                                                [DAY, DAY + DAY_MS])


@pytest.mark.parametrize(("args", "env", "line"), [
    *[(args, {}, line) for args, line in [
        (["--from", "yesterday"], "error: invalid --from: expected ISO-8601 such as 2026-11-01T22:00Z or 2026-11-01, "
                                  "or epoch milliseconds (got 'yesterday')"),
        (["--to", "1999-01-01"], "error: invalid --to: expected a time from 2000-01-01 on (got '1999-01-01')"),
        (["--from", "2026-11-02", "--to", "2026-11-01"],
         "error: invalid --to: 2026-11-01T00:00:00Z is not after --from 2026-11-02T00:00:00Z"),
        (["--to", "2126-11-01"], "error: --to 2126-11-01T00:00:00Z without --from recomputes every archived hour "
                                 "before it: give --from, or --long-range to mean it"),
        (["--from", "2026-11-01", "--to", "2126-11-01"],
         "error: --from 2026-11-01T00:00:00Z --to 2126-11-01T00:00:00Z spans 36,524 days, over the 31 a backfill "
         "may span without --long-range (every archived hour in it is read again and its windows rewritten)"),
    ]],
    (["--from", "2026-11-02", "--to", "2026-11-01"], {"AGGREGATIONS": "deploy/aggregations/iot.toml"},
     "error: invalid --to: 2026-11-01T00:00:00Z is not after --from 2026-11-02T00:00:00Z"),
])
def test_cli_refuses_a_bad_range_with_one_line(args: list[str], env: dict[str, str], line: str) -> None:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "batch", *args], cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root), **env}, capture_output=True, text=True,
                            timeout=60)
    assert (result.returncode, result.stdout, result.stderr.splitlines()) == (2, "", [line])


def test_a_long_backfill_needs_the_flag() -> None:
    """commands/batch.long_range_refusal: up to 31 days is a backfill; more, or no --from, must be asked for."""
    day = 86_400_000
    now = parse_time("2026-12-07T12:00Z")
    assert long_range_refusal(None, None, now_ms=now) is None
    assert long_range_refusal(now - 31 * day, now, now_ms=now) is None
    assert long_range_refusal(now - 31 * day, None, now_ms=now) is None  # up to now
    assert long_range_refusal(now - 31 * day - 1, now, now_ms=now) is not None
    assert long_range_refusal(now - 40 * day, None, now_ms=now) == (
        "error: --from 2026-10-28T12:00:00Z up to now spans 40 days, over the 31 a backfill may span without "
        "--long-range (every archived hour in it is read again and its windows rewritten)")
    assert long_range_refusal(None, now, now_ms=now) is not None
