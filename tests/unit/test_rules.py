"""The pure rules, each against the other spellings of it that the hot paths use (hypothesis draws the
cases; a failure prints the example and how to reproduce it).

| rule              | its module and reference          | the other spellings checked here                     |
| ----------------- | --------------------------------- | ---------------------------------------------------- |
| window starts     | tables/windows.window_starts      | windows_at (the fold asks it per slot of event time)  |
| close             | tables/windows.is_closed          | closed_upto_ms, first_open_start, windows_at         |
| fold              | tables/partials.fold_value        | fold_records' and _open_slot's inline folds          |
| event-time bound  | tables/partials.Limits            | fold_records' inline bound                           |
| merge             | tables/totals.merge_partial       | InstanceTotals.merge                                 |
| combine           | tables/totals.combine             | InstanceTotals.totals                                |
| fold, M measures  | tables/partials.fold_measures     | fold_value per measure                               |
| merge, combine, M | tables/totals.combine_measures    | InstanceTotals.merge, measure_totals                 |
| event validity    | formats/events._decode_checked    | decode_event's fast path, decode_common              |

The unit tests of each module hold the hand-picked cases (test_windows.py, test_partials.py,
test_totals.py, test_events.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.events import Event, _decode_checked, decode_common, decode_event, encode_event
from formats.partials import PartialKey
from tables import totals
from tables.partials import (
    BatchOutcome,
    Limits,
    PartitionPartials,
    Record,
    fold_measures,
    fold_records,
    fold_value,
    new_measures_partial,
    new_partial,
)
from tables.totals import InstanceTotals, combine, combine_measures, merge_partial
from tables.windows import WindowSpec, closed_upto_ms, first_open_start, is_closed, window_starts, windows_at

SETTINGS = settings(max_examples=300, deadline=None)
STEPS = (1, 7, 1_000, 20_000, 30_000, 60_000, 3_600_000)


@st.composite
def specs(draw: st.DrawFn) -> WindowSpec:
    step = draw(st.sampled_from(STEPS))
    return WindowSpec(f"w{step}", step * draw(st.integers(1, 5)), step)


times = st.integers(-10**13, 10**13)


# -- window starts and the close rule -------------------------------------------------------------


@SETTINGS
@given(spec=specs(), event_ms=times)
def test_window_starts_are_every_window_holding_the_time(spec: WindowSpec, event_ms: int) -> None:
    starts = window_starts(spec, event_ms)
    assert list(starts) == sorted(starts) and len(starts) == spec.size_ms // spec.step_ms
    assert all(s % spec.step_ms == 0 and s <= event_ms < s + spec.size_ms for s in starts)
    # none missed: the windows just before and after do not hold the time
    assert not starts[0] - spec.step_ms + spec.size_ms > event_ms
    assert not starts[-1] + spec.step_ms <= event_ms


@SETTINGS
@given(spec=specs(), start_steps=st.integers(-10**6, 10**6), frontier_ms=st.one_of(st.none(), times))
def test_the_close_rule_in_each_of_its_forms(spec: WindowSpec, start_steps: int, frontier_ms: int | None) -> None:
    start = start_steps * spec.step_ms
    closed = is_closed(start, spec.size_ms, frontier_ms)
    assert closed == (frontier_ms is not None and start + spec.size_ms <= frontier_ms)
    if frontier_ms is not None:
        assert closed == (start <= closed_upto_ms(spec.size_ms, frontier_ms))
        first = first_open_start(spec, frontier_ms)
        assert first % spec.step_ms == 0
        assert not is_closed(first, spec.size_ms, frontier_ms) and is_closed(first - spec.step_ms, spec.size_ms,
                                                                              frontier_ms)


@SETTINGS
@given(windows=st.lists(specs(), min_size=1, max_size=3, unique_by=lambda s: s.name), event_ms=times,
       frontier_ms=st.one_of(st.none(), times))
def test_windows_at_is_window_starts_split_by_the_close_rule(windows: list[WindowSpec], event_ms: int,
                                                             frontier_ms: int | None) -> None:
    every = [(spec.name, start, is_closed(start, spec.size_ms, frontier_ms))
             for spec in windows for start in window_starts(spec, event_ms)]
    opened, closed = windows_at(windows, event_ms, frontier_ms)
    assert opened == [(name, start) for name, start, shut in every if not shut]
    assert closed == tuple((name, start) for name, start, shut in every if shut)


# -- the fold and the event-time bound ------------------------------------------------------------

FOLD_WINDOWS = (WindowSpec("t", 60_000, 60_000), WindowSpec("h", 60_000, 20_000))
BASE_MS = 1_700_000_040_000
LIMITS = Limits(max_event_bytes=4_096, min_event_ms=946_684_800_000, max_clock_skew_ms=5_000, now_ms=BASE_MS)

records_of_one_partition = st.lists(
    st.tuples(st.sampled_from(("a", "b", "c")), st.integers(-200_000, 200_000), st.integers(-40, 40),
              st.integers(0, 3), st.sampled_from((-1, BASE_MS - 1_000, BASE_MS + 100_000))),
    max_size=60)


@SETTINGS
@given(drawn=records_of_one_partition, frontier=st.one_of(st.none(), st.integers(-120_000, 120_000)),
       cut=st.integers(0, 60))
def test_the_folds_inline_spellings_are_the_rules(drawn: list[tuple[str, int, int, int, int]], frontier: int | None,
                                                  cut: int) -> None:
    """fold_records (in two batches, with replays) against new_partial, fold_value, window_starts, the
    close rule and Limits: the same partials, the same late records with the same missed windows, the
    same dead letters."""
    records, offset = [], 0
    for event_type, at, quarter, gap, written_ms in drawn:
        offset += gap  # gap 0: the same offset again, a replay
        records.append(Record(0, offset, encode_event(Event("u", event_type, BASE_MS + at, quarter / 4)),
                              written_ms))
    frontier_ms = None if frontier is None else BASE_MS + frontier
    partials, outcome = PartitionPartials(0), BatchOutcome()
    for batch in (records[:cut], records[cut:]):
        fold_records(0, batch, partials, FOLD_WINDOWS, frontier_ms, LIMITS, outcome)

    want: dict[PartialKey, list[float]] = {}
    late, dead = [], []
    for record in records:
        event = LIMITS.decode(record)
        if not isinstance(event, Event):
            dead.append(record.offset)
            continue
        missed = []
        for spec in FOLD_WINDOWS:
            for start in window_starts(spec, event.event_ms):
                if is_closed(start, spec.size_ms, frontier_ms):
                    missed.append((spec.name, start))
                    continue
                key = PartialKey(spec.name, start, event.event_type)
                current = want.get(key)
                if current is None:
                    want[key] = new_partial(event.value, record.offset)
                elif record.offset > current[4]:
                    fold_value(current, event.value, record.offset)
        if missed:
            late.append((record.offset, tuple(missed)))
    assert partials.values == want
    assert [(item.record.offset, item.closed) for item in outcome.late] == late
    assert [item.record.offset for item in outcome.dead_letters] == dead


# -- merge and combine ----------------------------------------------------------------------------

partials_drawn = st.tuples(st.integers(1, 9), st.floats(allow_nan=False, width=64), st.integers(0, 50))


@SETTINGS
@given(deliveries=st.lists(st.tuples(st.integers(0, 3), st.lists(st.tuples(st.sampled_from("abcde"), partials_drawn),
                                                                 min_size=1, max_size=5, unique_by=lambda e: e[0])),
                           min_size=1, max_size=40))
def test_instance_totals_merge_and_combine_as_the_rules(
        deliveries: list[tuple[int, list[tuple[str, tuple[int, float, int]]]]]) -> None:
    for column_merge_min in (totals.COLUMN_MERGE_MIN, 1):  # the loop, and the columns' merge
        with _column_merge_from(column_merge_min):
            _merge_and_combine_as_the_rules(deliveries)


@contextmanager
def _column_merge_from(keys: int) -> Iterator[None]:
    """InstanceTotals.merge takes messages of at least `keys` keys as columns (tables.totals.COLUMN_MERGE_MIN)."""
    default, totals.COLUMN_MERGE_MIN = totals.COLUMN_MERGE_MIN, keys
    try:
        yield
    finally:
        totals.COLUMN_MERGE_MIN = default


def _merge_and_combine_as_the_rules(deliveries: list[tuple[int, list[tuple[str, tuple[int, float, int]]]]]) -> None:
    instance = InstanceTotals("w", 0)
    reference: dict[str, dict[int, list[float]]] = {}
    for partition, entries in deliveries:
        partials = [(event_type, [count, value, min(value, -1.0), max(value, 1.0), marker])
                    for event_type, (count, value, marker) in entries]
        for event_type, partial in partials:
            merge_partial(reference.setdefault(event_type, {}), partition, partial)
        instance.merge(partition, *map(list, zip(*[(t, *p) for t, p in partials], strict=True)))
    assert {t: instance.parts(instance.index[t]) for t in reference} == reference
    assert {p: len(columns) for p, columns in instance.sources.items()} == dict(  # a row per key a partition sent
        Counter(p for parts in reference.values() for p in parts))
    assert {instance.types[i] for i in instance.dirty} == set(reference)  # every key merged, none persisted
    types = sorted(reference)
    got = instance.totals([instance.index[t] for t in types])
    want = [combine(reference[t]) for t in types]
    assert [tuple(map(repr, g)) for g in got] == [tuple(map(repr, w)) for w in want]  # bit for bit, -0.0 too
    assert all(math.isnan(g.sum) == math.isnan(w.sum) for g, w in zip(got, want, strict=True))


# -- event validity -------------------------------------------------------------------------------

json_values = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1), st.floats(allow_nan=False),
                        st.text(max_size=8), st.sampled_from(("2026-11-01T22:00:00Z", "2026-11-01", "x" * 300)))
documents = st.dictionaries(st.sampled_from(("user_id", "event_type", "timestamp", "value", "extra")), json_values)


@SETTINGS
@given(document=documents, timestamp=st.integers(946_684_800_000 - 2, 946_684_800_000 + 2))
def test_the_fast_paths_accept_exactly_what_the_full_checks_accept(document: dict[str, object],
                                                                   timestamp: int) -> None:
    limits = {"max_bytes": 4_096, "min_event_ms": 946_684_800_000, "max_event_ms": 946_684_800_001}
    for candidate in ({**document}, {**document, "timestamp": timestamp},
                      {"user_id": "u", "event_type": "e", "value": 1.5, **document, "timestamp": timestamp}):
        raw = orjson.dumps(candidate)
        full = _decode_checked(raw, **limits)
        assert decode_event(raw, **limits) == full
        fields = decode_common(raw, limits["max_bytes"], limits["min_event_ms"], limits["max_event_ms"])
        if fields is not None:
            assert full == Event(fields.user_id, fields.event_type, fields.timestamp, fields.value)


# -- several measures -------------------------------------------------------------------------------

measure_values = st.one_of(st.none(), st.integers(-40, 40).map(lambda q: q / 4))


@SETTINGS
@given(values=st.lists(st.lists(measure_values, min_size=3, max_size=3), min_size=1, max_size=20))
def test_the_fold_of_several_measures_is_fold_value_per_measure(values: list[list[float | None]]) -> None:
    """fold_measures folds each measure as fold_value would the values it has."""
    partial = new_measures_partial(values[0], 0)
    for offset, row in enumerate(values[1:], start=1):
        fold_measures(partial, row, offset)
    for m in range(3):
        present = [(offset, row[m]) for offset, row in enumerate(values) if row[m] is not None]
        if not present:
            assert partial[4 * m:4 * m + 4] == [0, 0.0, 0.0, 0.0]
            continue
        one = new_partial(present[0][1], present[0][0])  # type: ignore[arg-type]
        for offset, value in present[1:]:
            fold_value(one, value, offset)  # type: ignore[arg-type]
        assert partial[4 * m:4 * m + 4] == one[:4]
    assert partial[-1] == len(values) - 1


# count, sum, min, max: any floats but NaN, drawn apart so that each statistic's arithmetic is checked on its
# own; zeros of both signs often, since min(0.0, -0.0) is the first of them.
statistic = st.one_of(st.floats(allow_nan=False), st.sampled_from([0.0, -0.0]))
measures_partial = st.lists(st.one_of(st.none(), st.tuples(st.integers(1, 9), statistic, statistic, statistic)),
                            min_size=2, max_size=2)


@SETTINGS
@given(deliveries=st.lists(st.tuples(st.integers(0, 3), st.sampled_from("abc"), measures_partial,
                                     st.integers(0, 50)), min_size=1, max_size=40))
def test_instance_totals_of_several_measures_merge_and_combine_as_the_rules(
        deliveries: list[tuple[int, str, list[tuple[int, float, float, float] | None], int]]) -> None:
    for column_merge_min in (totals.COLUMN_MERGE_MIN, 1):  # the loop, and the columns' merge
        with _column_merge_from(column_merge_min):
            _measures_merge_and_combine_as_the_rules(deliveries)


def _measures_merge_and_combine_as_the_rules(
        deliveries: list[tuple[int, str, list[tuple[int, float, float, float] | None], int]]) -> None:
    instance = InstanceTotals("w", 0, measures=2)
    reference: dict[str, dict[int, list[float]]] = {}
    for partition, key, measures, marker in deliveries:
        partial: list[float] = []
        for measure in measures:
            partial += [0, 0.0, 0.0, 0.0] if measure is None else list(measure)
        partial.append(marker)
        merge_partial(reference.setdefault(key, {}), partition, partial)
        instance.merge(partition, [key], partial[0:8:4], partial[1:8:4], partial[2:8:4], partial[3:8:4], [marker])
    assert {key: instance.parts(instance.index[key]) for key in reference} == reference
    assert {p: len(columns) for p, columns in instance.sources.items()} == dict(
        Counter(p for parts in reference.values() for p in parts))
    keys = sorted(reference)
    got = instance.measure_totals([instance.index[key] for key in keys])
    assert repr(got) == repr([combine_measures(reference[key], 2) for key in keys])  # -0.0 apart from 0.0
