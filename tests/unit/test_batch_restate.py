"""Restatement of the speed layer's windows: the pure fold, comparison and placement, stage 2's
progress, and whole runs against an in-memory lake and Redis (crashes at every write included)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import orjson
import pytest

from batch.job import Plan, run_batch
from batch.periods import parse_time
from batch.report import RunReport
from batch.restate import (
    Change,
    compare,
    hours_to_restate,
    place,
    recompute,
    span_end_ms,
    starts_in_hour,
    windows_overlap,
)
from batch.restating import Restatement
from batch.stage2 import Stage2View, view_of
from formats.events import Event, encode_event
from formats.lake import HOUR_MS, AggregateKey, aggregate_key, archive_key, parse_aggregate_key, restate_manifest_key
from formats.partials import PartialKey
from formats.raw import events_to_parquet
from formats.rows import WindowRow, parquet_to_rows, rows_to_parquet
from formats.state import frontier_state_key, ledger_state_key
from tables.partials import Limits, PartitionPartials, Record
from tables.totals import combine
from tables.windows import WindowSpec, parse_windows
from testing.fakes import MemoryLake, fold_batch, stored_totals

HOUR = parse_time("2026-11-01T22:00Z")
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
PARTITIONS = 3
LIMITS = Limits(max_event_bytes=65_536, min_event_ms=0, max_clock_skew_ms=10**13, now_ms=HOUR)
TYPES = ["click", "view", "../=x/é"]

RawEvent = tuple[int, int, str, int, float]  # partition, offset, event_type, event_ms, value
# The hours of window starts of _setup's events (22:00 to 23:01): 21:59:30's hopping window is hour 21's.
SPEED_HOURS = (HOUR - HOUR_MS, HOUR, HOUR + HOUR_MS)


def test_hours_and_spans() -> None:
    hopping = WindowSpec("h", 60_000, 30_000)
    assert list(starts_in_hour(hopping, HOUR))[:2] == [HOUR, HOUR + 30_000]
    assert starts_in_hour(hopping, HOUR)[-1] == HOUR + HOUR_MS - 30_000
    assert span_end_ms(WINDOWS, HOUR) == HOUR + HOUR_MS + 30_000  # the last hopping window spills over
    assert span_end_ms((WindowSpec("d", 86_400_000, 86_400_000),), HOUR) is None  # no daily window starts at 22:00
    two_hours = (WindowSpec("two", 7_200_000, 7_200_000),)
    assert (span_end_ms(two_hours, HOUR), span_end_ms(two_hours, HOUR + HOUR_MS)) == (HOUR + 2 * HOUR_MS, None)


def _hours_holding_windows_over(windows: Sequence[WindowSpec], raw_hours: Sequence[int], low: int | None,
                                high: int | None) -> list[int]:
    """The reference for hours_to_restate, by enumerating every window start near the raw hours: the
    hours of the starts of windows that overlap a raw hour and, if bounded, an hour of [low, high)."""
    found = set()
    for raw in raw_hours:
        for spec in windows:
            start = raw - 2 * spec.size_ms - (raw - 2 * spec.size_ms) % spec.step_ms
            while start < raw + HOUR_MS:
                end = start + spec.size_ms
                over_raw = start < raw + HOUR_MS and end > raw
                lo = None if low is None else low - low % HOUR_MS
                hi = None if high is None else -(-high // HOUR_MS) * HOUR_MS
                in_range = (lo is None or end > lo) and (hi is None or start < hi)
                if over_raw and in_range:
                    found.add(start - start % HOUR_MS)
                start += spec.step_ms
    return sorted(found)


SELECTION_WINDOWS = {
    "default": WINDOWS,
    "two-hour tumbling": parse_windows("t2h:2h"),
    "three hours hopping by one": parse_windows("h3h:3h:1h"),
    "a day": parse_windows("day:24h"),
    "7 min (does not divide the hour)": parse_windows("t7:7m"),
    "77 min hopping by 11 min": parse_windows("h77:77m:11m"),
    "90 min hopping by 45 min": parse_windows("h90:90m:45m"),
    "25 min and 2 h together": parse_windows("t25:25m,t2h:2h"),
    "45 s, 1 min by 30 s": parse_windows("t45:45s,h1:60s:30s"),
}


@pytest.mark.parametrize("name", sorted(SELECTION_WINDOWS))
def test_hours_to_restate_are_every_hour_holding_a_window_over_raw_data(name: str) -> None:
    windows = SELECTION_WINDOWS[name]
    rng = random.Random(name)
    for _ in range(40):
        base = HOUR + rng.randrange(-48, 48) * HOUR_MS
        raw = sorted({base + rng.choice((0, 1, 2, 5, 30)) * HOUR_MS * rng.randrange(2) + k * HOUR_MS
                      for k in range(rng.randrange(1, 4))})
        low = rng.choice((None, base + rng.randrange(-3 * HOUR_MS, 2 * HOUR_MS)))
        high = rng.choice((None, (low or base) + rng.randrange(1, 4 * HOUR_MS)))
        want = _hours_holding_windows_over(windows, raw, low, high)
        assert hours_to_restate(windows, raw, low, high) == want, (raw, low, high)
        assert hours_to_restate(windows, raw) == _hours_holding_windows_over(windows, raw, None, None), raw


def test_the_hour_before_traffic_is_restated_and_backfilled() -> None:
    # Raw files only from 22:00: hour 21 holds [21:59:30, 22:00:30), hour 20 nothing over 22:00.
    assert hours_to_restate(WINDOWS, [HOUR]) == [HOUR - HOUR_MS, HOUR]
    # A backfill of 21:00-22:00 covers hour 21 only; of 22:00-23:00, both (hour 21's window spans 22:00).
    assert hours_to_restate(WINDOWS, [HOUR], HOUR - HOUR_MS, HOUR) == [HOUR - HOUR_MS]
    assert hours_to_restate(WINDOWS, [HOUR], HOUR, HOUR + HOUR_MS) == [HOUR - HOUR_MS, HOUR]
    # A backfill over hours without raw files at all considers nothing.
    assert hours_to_restate(WINDOWS, [HOUR], HOUR + 5 * HOUR_MS, HOUR + 9 * HOUR_MS) == []
    # Two-hour windows starting at even hours: a raw hour at 23:00 (odd) is spanned by the window of 22:00.
    two = parse_windows("t2h:2h")
    assert hours_to_restate(two, [HOUR + HOUR_MS]) == [HOUR]
    assert windows_overlap(two, HOUR, HOUR + HOUR_MS, HOUR + 2 * HOUR_MS)
    assert not windows_overlap(two, HOUR + HOUR_MS, None, None)  # no window starts at 23:00
    # 7-minute windows (7 does not divide 60): one starts in hour 21 and ends after 22:00, and the first
    # of hour 22 starts after 22:00. A backfill of 22:00 to 22:00:00.001 covers hour 22 and so both.
    seven = parse_windows("t7:7m")
    first = starts_in_hour(seven[0], HOUR)[0]
    assert HOUR < first < HOUR + 7 * 60_000
    assert hours_to_restate(seven, [HOUR], HOUR, HOUR + 1) == [HOUR - HOUR_MS, HOUR]


def _events(n: int, seed: int, hour: int = HOUR, first_offset: int = 0) -> list[RawEvent]:
    rng = random.Random(seed)
    offsets = dict.fromkeys(range(PARTITIONS), first_offset)
    found = []
    for _ in range(n):
        partition = rng.randrange(PARTITIONS)
        offsets[partition] += 1
        found.append((partition, offsets[partition], rng.choice(TYPES), hour + rng.randrange(HOUR_MS + 60_000),
                      rng.uniform(-1e3, 1e3)))  # arbitrary floats: sums depend on their order
    return found


def _speed_layer(events: Sequence[RawEvent], hour: int = HOUR) -> dict[PartialKey, WindowRow]:
    """What stages 1 and 2 export for the windows starting in the hour, by the pipeline's own code."""
    partials = {p: PartitionPartials(p) for p in range(PARTITIONS)}
    records = [Record(p, o, encode_event(Event("u", t, ms, v)), ms) for p, o, t, ms, v in sorted(events)]
    fold_batch(records, partials, WINDOWS, {}, LIMITS)
    parts: dict[PartialKey, dict[int, list[float]]] = {}
    for p, partition in partials.items():
        for key, value in partition.values.items():
            parts.setdefault(key, {})[p] = value
    size = {spec.name: spec.size_ms for spec in WINDOWS}
    return {key: WindowRow(key.window, key.start_ms, key.start_ms + size[key.window], key.event_type, *combine(v))
            for key, v in parts.items() if hour <= key.start_ms < hour + HOUR_MS}


@pytest.mark.parametrize("seed", range(3))
def test_recompute_gives_the_speed_layers_rows_bit_for_bit(seed: int) -> None:
    events = _events(2_000, seed)
    shuffled = events[:]
    random.Random(seed).shuffle(shuffled)
    speed = _speed_layer(events)
    again = recompute(WINDOWS, HOUR, sorted(shuffled))
    bits = {k: tuple(map(repr, row)) for k, row in speed.items()}
    assert {k: tuple(map(repr, row)) for k, row in again.items()} == bits
    assert compare(again, speed).changes == []


def _row(event_type: str, count: int, total: float, revision: int = 0, late: int = 0) -> WindowRow:
    return WindowRow("tumbling_1m", HOUR, HOUR + 60_000, event_type, count, total, 0.0, total, revision, late)


def _key(row: WindowRow) -> PartialKey:
    return PartialKey(row.window, row.window_start_ms, row.event_type)


def test_compare_revises_changed_rows_and_adds_new_ones() -> None:
    stored = {_key(r): r for r in (_row("same", 2, 3.0), _row("late", 2, 3.0), _row("again", 5, 9.0, 1, 2),
                                    _row("short", 4, 4.0), _row("gone", 1, 1.0))}
    recomputed = {_key(r): r for r in (_row("same", 2, 3.0), _row("late", 3, 4.0), _row("again", 6, 10.0),
                                        _row("short", 3, 4.0), _row("new", 2, 2.0))}
    result = compare(recomputed, stored)
    assert sorted((c.row.event_type, c.row.revision, c.row.late_count) for c in result.changes) == [
        ("again", 2, 3), ("late", 1, 1), ("new", 1, 2)]  # "again": the speed layer counted 5 - 2
    assert [(old.event_type, new.count) for old, new in result.short] == [("short", 3)]
    assert [row.event_type for row in result.missing] == ["gone"]


def test_place_keeps_one_row_per_key() -> None:
    a, b = _row("a", 1, 1.0), _row("b", 1, 1.0)
    objects = {"part0": [a], "part1": [b]}
    changes = [Change(a._replace(count=2, revision=1, late_count=1), a), Change(_row("c", 1, 1.0, 1, 1), None),
               Change(_row("d", 1, 1.0, 1, 1), None)]
    written = place(changes, objects, lambda key: "part1" if key.event_type == "c" else "part2")
    assert {k: [r.event_type for r in rows] for k, rows in written.items()} == {
        "part0": ["a"], "part1": ["b", "c"], "part2": ["d"]}
    assert written["part0"][0].count == 2


def test_stage2_view() -> None:
    def state(frontiers: dict[int, int], open_starts: Sequence[int] = ()) -> dict[bytes, bytes]:
        items = {frontier_state_key(p): orjson.dumps(f) for p, f in frontiers.items()}
        keys = [PartialKey("tumbling_1m", start, "x") for start in open_starts]
        items.update(stored_totals([(key, {0: [1, 1.0, 1.0, 1.0, 5]}) for key in keys]))
        items[ledger_state_key("tumbling_1m", HOUR)] = orjson.dumps(HOUR + 60_000)
        return items

    end = HOUR + HOUR_MS + 30_000
    done = view_of({0: state({0: end, 1: end + 5}), 1: state({0: end + 9, 1: end})}, 2, 2)
    assert done == Stage2View(end, frozenset()) and done.exported(HOUR, end)
    assert not done.exported(HOUR, end + 1)
    pending = view_of({0: state({0: end, 1: end}, [HOUR + 120_000]), 1: state({0: end, 1: end})}, 2, 2)
    assert not pending.exported(HOUR, end) and pending.exported(HOUR + HOUR_MS, end)
    assert view_of({0: state({0: end, 1: end}), 1: state({0: end})}, 2, 2).low_ms is None  # one frontier missing
    assert not Stage2View(None, frozenset()).exported(HOUR, end)


# -- whole runs ------------------------------------------------------------------------------


class MemoryRedis:
    def __init__(self) -> None:
        self.rows: dict[PartialKey, WindowRow] = {}
        self.writes = 0
        self.lake: MemoryLake | None = None  # shares the lake's crash counter

    def write(self, rows: Sequence[WindowRow]) -> None:
        if self.lake is not None:
            self.lake.put_bytes("redis-write", b"", "")  # a write that can crash, like an S3 put
            del self.lake.objects["redis-write"]
        self.writes += 1
        self.rows.update({_key(r): r for r in rows})


class Exported:
    def __init__(self) -> None:
        self.all = True

    def exported(self, hour_ms: int, end_ms: int) -> bool:
        return self.all


def _archive(lake: MemoryLake, events: Sequence[RawEvent]) -> None:
    """Raw files as the archiver cuts them: per partition and hour, contiguous offsets."""
    files: dict[tuple[int, int], list[RawEvent]] = {}
    for event in sorted(events):
        files.setdefault((event[0], event[3] - event[3] % HOUR_MS), []).append(event)
    for (partition, _hour), chunk in files.items():
        records = [(p, o, Event("u", t, ms, v)) for p, o, t, ms, v in chunk]  # their own offsets: the fold's order
        lake.raw_put(archive_key("", chunk[0][3], partition, chunk[0][1]), events_to_parquet(records))


def _export(lake: MemoryLake, rows: dict[PartialKey, WindowRow], config: Restatement) -> None:
    """Stage 2's objects: one per (window, start, owning partition)."""
    objects: dict[str, list[WindowRow]] = {}
    for key, row in rows.items():
        objects.setdefault(config.home("", key), []).append(row)
    for key, file_rows in objects.items():
        lake.raw_put(key, rows_to_parquet(file_rows))


def _windows_in_lake(lake: MemoryLake) -> dict[PartialKey, WindowRow]:
    found: dict[PartialKey, WindowRow] = {}
    for key, (body, _) in lake.objects.items():
        if parse_aggregate_key("", key) is not None:
            for row in parquet_to_rows(body):
                assert _key(row) not in found, f"two rows of {row}"
                assert config_home_ok(key, row)
                found[_key(row)] = row
    return found


def config_home_ok(object_key: str, row: WindowRow) -> bool:
    name = parse_aggregate_key("", object_key)
    return name is not None and (name.window, name.window_start_ms) == (row.window, row.window_start_ms)


def _expected(on_time: Sequence[RawEvent], late: Sequence[RawEvent]) -> dict[PartialKey, WindowRow]:
    """The reference: every event counted (stage 1's order), revision 1 and late_count where late ones fell."""
    speed = {k: r for hour in SPEED_HOURS for k, r in _speed_layer(on_time, hour).items()}
    rows = {}
    for hour in SPEED_HOURS:
        full = recompute(WINDOWS, hour, sorted([*on_time, *late]))
        for key, row in full.items():
            counted = speed[key].count if key in speed else 0
            rows[key] = row._replace(revision=int(row.count != counted), late_count=row.count - counted)
    return rows


def _setup() -> tuple[MemoryLake, MemoryRedis, Restatement, list[RawEvent], list[RawEvent]]:
    lake, redis = MemoryLake(), MemoryRedis()
    config = Restatement(WINDOWS, 4, Exported(), redis)
    on_time = _events(600, 1, first_offset=0)  # hours 22 and 23:00:xx
    late = [(p, 10_000 + i, t, ms, v) for i, (p, _, t, ms, v) in enumerate(_events(20, 2))]
    late.append((0, 20_000, "only-late", HOUR + 59 * 60_000 + 45_000, 1.5))  # a new type, in a spilling window
    # In the hopping window [21:59:30, 22:00:30), stored under hour 21, which has no raw file.
    late.append((1, 20_001, "click", HOUR + 10_000, 2.5))
    _archive(lake, on_time)
    for hour in SPEED_HOURS:
        _export(lake, _speed_layer(on_time, hour), config)
    redis.rows.update(_speed_layer(on_time))
    _archive(lake, late)
    return lake, redis, config, on_time, late


def _run(lake: MemoryLake, config: Restatement, plan: Plan | None = None,
         bound: int | None = HOUR + 3 * HOUR_MS) -> tuple[RunReport, list[str]]:
    lines: list[str] = []
    return run_batch(lake, sealed_until_ms=bound, plan=plan or Plan(), say=lines.append, restatement=config), lines


def test_late_events_restate_their_windows_in_s3_and_redis_then_nothing_is_written() -> None:
    lake, redis, config, on_time, late = _setup()
    report, lines = _run(lake, config)
    expected = _expected(on_time, late)
    assert _windows_in_lake(lake) == expected
    restated = {k: r for k, r in expected.items() if r.revision}
    assert report.rows_restated == len(restated) and report.restated_hours == 3
    straddling = expected[PartialKey("hopping_1m", HOUR - 30_000, "click")]
    assert (straddling.revision, straddling.late_count) == (1, 1) and redis.rows[_key(straddling)] == straddling
    assert {k: redis.rows[k] for k in restated} == restated
    assert any(line.startswith("restated tumbling_1m 2026-11-01T22:59:00Z: 'only-late' new -> 1 (revision 1, 1 late)")
               for line in lines), lines
    # One line per restated window, naming each of its restated rows (event type, revision, late count).
    restated_lines = [line for line in lines if line.startswith("restated ")]
    assert len(restated_lines) == report.windows_restated == len({(k.window, k.start_ms) for k in restated})
    assert sum(line.count(" late)") for line in restated_lines) == report.rows_restated
    assert restate_manifest_key("", HOUR) in lake.objects
    steps: list[tuple[int, int]] = []
    run_batch(lake, sealed_until_ms=HOUR + 3 * HOUR_MS, plan=Plan(), say=lambda line: None, restatement=config,
              progress=lambda *step: steps.append(step))
    assert steps == [(n, 6) for n in range(1, 7)]  # two hours and their day, then the windows of three hours
    writes = redis.writes
    again, _ = _run(lake, config)
    assert (again.objects_written, again.rows_restated, again.restate_up_to_date) == (0, 0, 3)
    assert redis.writes == writes
    # A later late file: its windows go to revision 2, late_count counting both late events.
    key, row = next((k, r) for k, r in sorted(expected.items()) if r.revision == 1 and r.count > 1)
    _archive(lake, [(1, 30_000, key.event_type, key.start_ms + 10, 0.25)])
    _run(lake, config)
    now = _windows_in_lake(lake)[key]
    assert (now.revision, now.late_count, now.count) == (2, row.late_count + 1, row.count + 1)


@pytest.mark.parametrize("crash_at", range(1, 134, 12))  # a run writes 133 times (S3 and Redis)
def test_a_crash_at_any_write_is_completed_exactly_by_the_next_run(crash_at: int) -> None:
    lake, redis, config, on_time, late = _setup()
    redis.lake = lake
    lake.crash_at = lake.puts + crash_at
    try:
        _run(lake, config)
    except SystemExit:
        pass
    lake.crash_at = None
    _run(lake, config)
    expected = _expected(on_time, late)
    assert _windows_in_lake(lake) == expected
    assert {k: redis.rows[k] for k, r in expected.items() if r.revision} == {k: r for k, r in expected.items()
                                                                              if r.revision}
    assert _run(lake, config)[0].objects_written == 0


def test_nothing_is_restated_before_stage_2_has_exported_or_the_hours_are_sealed() -> None:
    lake, _, config, _, _ = _setup()
    before = dict(lake.objects)
    assert isinstance(config.stage2, Exported)
    config.stage2.all = False
    report, lines = _run(lake, config)
    assert (report.restate_waiting, report.rows_restated) == (3, 0)
    assert "hour 2026-11-01T22Z: windows not all exported by stage 2 yet: restated by a later run" in lines
    config.stage2.all = True
    report, _ = _run(lake, config, bound=HOUR + 29_999)  # the spilling windows of 21:59:30 and 22:59:30 are open
    assert report.restate_not_sealed == 3 and report.rows_restated == 0
    assert {k: v for k, v in lake.objects.items() if k.startswith("aggregated/") and "hourly" not in k
            and "daily" not in k} == {k: v for k, v in before.items() if k.startswith("aggregated/")}


def test_backfill_repopulates_a_flushed_redis_and_a_new_window() -> None:
    lake, redis, config, on_time, late = _setup()
    _run(lake, config)
    redis.rows.clear()
    report, _ = _run(lake, config, Plan(HOUR, HOUR + 2 * HOUR_MS))
    assert report.rows_restated == 0
    assert redis.rows == _windows_in_lake(lake)
    # A window added to WINDOWS: backfilled from the raw archive, revision 1, every event "late" for it.
    five = WindowSpec("tumbling_5m", 300_000, 300_000)
    wider = Restatement((*WINDOWS, five), 4, Exported(), redis)
    _run(lake, wider, Plan(HOUR, HOUR + 2 * HOUR_MS))
    all_events = sorted([*on_time, *late])
    want = {k: r._replace(revision=1, late_count=r.count) for hour in (HOUR, HOUR + HOUR_MS)
            for k, r in recompute((five,), hour, all_events).items()}
    got = {k: r for k, r in _windows_in_lake(lake).items() if k.window == "tumbling_5m"}
    assert got == want and {k: redis.rows[k] for k in want} == want
    for key in want:  # each new row in the object of the stage-2 partition its key routes to
        assert key in {_key(r) for r in parquet_to_rows(lake.objects[wider.home("", key)][0])}


def test_aggregate_names_parse_back() -> None:
    key = aggregate_key("p/", "hopping_1m", HOUR + 30_000, 3)
    assert parse_aggregate_key("p/", key) == AggregateKey("hopping_1m", HOUR + 30_000, 3)
    for foreign in (key.replace("part0003", "part3"), key.replace("hour=22", "hour=23"), key + ".tmp",
                    "p/aggregated/hopping_1m/notes.parquet"):
        assert parse_aggregate_key("p/", foreign) is None
