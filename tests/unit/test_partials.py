"""Stage 1 (tables/partials.py): the fold (through testing.fakes.fold_batch) and PartitionPartials.pop_closed.

Values are multiples of 0.25 of small magnitude, so every sum is exact in any order and
partials are compared with ==, never approximately.
"""

from __future__ import annotations

import copy
import random
import types
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
import pytest

from formats import events
from formats.events import (
    BAD_STRING,
    BAD_TIMESTAMP,
    INVALID_JSON,
    MISSING_FIELD,
    NON_FINITE_VALUE,
    NOT_AN_OBJECT,
    OVERSIZED,
    REJECTION_REASONS,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    Event,
    Rejection,
    decode_event,
    encode_event,
)
from formats.partials import PartialColumns, PartialKey, decode_stage_message
from tables.partials import (
    COUNT,
    MARKER,
    MAX,
    MIN,
    SUM,
    BatchOutcome,
    DeadLetter,
    InstancePartials,
    LateEvent,
    Limits,
    PartitionPartials,
    Record,
    fold_value,
    new_partial,
)
from tables.totals import Totals, combine, merge_partial
from tables.windows import WindowSpec
from testing.fakes import fold_batch, partials_messages

TUMBLING = WindowSpec("tumbling_1m", 60_000, 60_000)
HOPPING = WindowSpec("hopping_1m", 60_000, 20_000)  # every event is in 3 hopping windows
WINDOWS = (TUMBLING, HOPPING)
MIN_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_MS = 1_900_000_000_000
LIMITS = Limits(max_event_bytes=4_096, min_event_ms=MIN_MS, max_clock_skew_ms=0, now_ms=MAX_MS)
BASE_MS = 1_700_000_040_000  # a multiple of 60_000 (and so of 20_000)
TYPES = ("click", "view", "buy|x", "a:b/..", "ü")


def _raw(event_type: str, event_ms: int, value: float, user_id: str = "u1") -> bytes:
    return encode_event(Event(user_id=user_id, event_type=event_type, event_ms=event_ms, value=float(value)))


def _json(**fields: Any) -> bytes:
    return orjson.dumps(fields)


def _entries(instances: list[InstancePartials]) -> list[tuple[PartialKey, list[float]]]:
    return [entry for instance in instances for entry in instance.entries()]


def _partials(*partitions: int) -> dict[int, PartitionPartials]:
    return {p: PartitionPartials(p) for p in partitions}


def _fold(records: Iterable[Record], partitions: dict[int, PartitionPartials],
          frontiers: dict[int, int | None] | None = None,
          limits: Limits = LIMITS, windows: tuple[WindowSpec, ...] = WINDOWS) -> BatchOutcome:
    return fold_batch(list(records), partitions, windows, frontiers if frontiers is not None else {}, limits)


def _changed(outcome: BatchOutcome) -> dict[int, set[PartialKey]]:
    """dirty without partitions whose set is empty (a replay may leave an empty set)."""
    return {p: keys for p, keys in outcome.dirty.items() if keys}


def _ref_starts(spec: WindowSpec, event_ms: int) -> list[int]:
    """Brute force: every multiple s of step with s <= event_ms < s + size (no window_starts)."""
    first = (event_ms - spec.size_ms) // spec.step_ms * spec.step_ms
    return [s for s in range(first, event_ms + 1, spec.step_ms) if s <= event_ms < s + spec.size_ms]


def _decode(raw: bytes, limits: Limits = LIMITS) -> Event | Rejection:
    return decode_event(raw, max_bytes=limits.max_event_bytes, min_event_ms=limits.min_event_ms,
                        max_event_ms=limits.latest_event_ms(-1))


class _Ref:
    """Brute-force per-partition partials, fed (partition, offset, key, value) in offset order."""

    def __init__(self) -> None:
        self.values: dict[int, dict[PartialKey, list[float]]] = defaultdict(dict)

    def add(self, partition: int, offset: int, key: PartialKey, value: float) -> None:
        current = self.values[partition].get(key)
        if current is None:
            self.values[partition][key] = [1, value, value, value, offset]
        else:
            current[COUNT] += 1
            current[SUM] += value
            current[MIN] = min(current[MIN], value)
            current[MAX] = max(current[MAX], value)
            assert offset > current[MARKER], "reference fed out of order"
            current[MARKER] = offset

    def totals(self) -> dict[PartialKey, Totals]:
        merged: dict[PartialKey, list[float]] = {}
        for partition in sorted(self.values):
            for key, (count, total, low, high, _marker) in self.values[partition].items():
                if key not in merged:
                    merged[key] = [count, total, low, high]
                else:
                    m = merged[key]
                    m[0] += count
                    m[1] += total
                    m[2] = min(m[2], low)
                    m[3] = max(m[3], high)
        return {key: Totals(int(c), s, lo, hi) for key, (c, s, lo, hi) in merged.items()}


def _random_records(rng: random.Random, partitions: int, per_partition: int) -> dict[int, list[Record]]:
    streams: dict[int, list[Record]] = {}
    for p in range(partitions):
        offset = rng.randint(0, 40)
        clock = BASE_MS + rng.randint(0, 30_000)
        records = []
        for _ in range(per_partition):
            clock += rng.randint(0, 4_000)
            event_ms = clock - (rng.randint(0, 150_000) if rng.random() < 0.15 else 0)
            value = rng.randint(-400, 400) * 0.25
            records.append(Record(p, offset, _raw(rng.choice(TYPES), event_ms, value, f"user{rng.randint(0, 9)}")))
            offset += rng.choice((1, 1, 1, 2, 7))  # gaps: transaction markers, compaction
        streams[p] = records
    return streams


def _interleave(rng: random.Random, streams: dict[int, list[Any]]) -> list[Any]:
    """A random merge of the per-partition lists that keeps each list's order."""
    cursors = {p: 0 for p in streams}
    merged = []
    while True:
        live = [p for p in sorted(streams) if cursors[p] < len(streams[p])]
        if not live:
            return merged
        p = rng.choice(live)
        merged.append(streams[p][cursors[p]])
        cursors[p] += 1


def _split(rng: random.Random, items: list[Any], max_size: int) -> Iterator[list[Any]]:
    index = 0
    while index < len(items):
        size = rng.randint(1, max_size)
        yield items[index : index + size]
        index += size


# -- exact values of single events --------------------------------------------------------


def test_single_event_goes_to_its_tumbling_and_three_hopping_windows() -> None:
    parts = _partials(0)
    event_ms = BASE_MS + 45_000
    record = Record(0, 17, _raw("click", event_ms, 2.5))
    outcome = _fold([record], parts)
    expected = {
        PartialKey("tumbling_1m", BASE_MS, "click"): [1, 2.5, 2.5, 2.5, 17],
        PartialKey("hopping_1m", BASE_MS, "click"): [1, 2.5, 2.5, 2.5, 17],
        PartialKey("hopping_1m", BASE_MS + 20_000, "click"): [1, 2.5, 2.5, 2.5, 17],
        PartialKey("hopping_1m", BASE_MS + 40_000, "click"): [1, 2.5, 2.5, 2.5, 17],
    }
    assert parts[0].values == expected
    assert outcome.dirty == {0: set(expected)}
    assert outcome.valid == [(record, Event("u1", "click", event_ms, 2.5))]
    assert outcome.max_event_ms == {0: event_ms}
    assert outcome.dead_letters == [] and outcome.late == []


def test_window_boundaries_are_half_open() -> None:
    parts = _partials(0)
    _fold([Record(0, 0, _raw("t", BASE_MS - 1, 1)), Record(0, 1, _raw("t", BASE_MS, 2))], parts,
          windows=(TUMBLING,))
    assert parts[0].values == {
        PartialKey("tumbling_1m", BASE_MS - 60_000, "t"): [1, 1.0, 1.0, 1.0, 0],
        PartialKey("tumbling_1m", BASE_MS, "t"): [1, 2.0, 2.0, 2.0, 1],
    }


def test_count_sum_min_max_and_marker_accumulate_per_key() -> None:
    parts = _partials(0)
    values = [3.0, -1.25, 7.5, 0.0, -1.25]
    records = [Record(0, 100 + 3 * i, _raw("view", BASE_MS + i * 1_000, v)) for i, v in enumerate(values)]
    records.append(Record(0, 200, _raw("other", BASE_MS + 5, 9.0)))
    outcome = _fold(records, parts, windows=(TUMBLING,))
    assert parts[0].values == {
        PartialKey("tumbling_1m", BASE_MS, "view"): [5, 8.0, -1.25, 7.5, 112],
        PartialKey("tumbling_1m", BASE_MS, "other"): [1, 9.0, 9.0, 9.0, 200],
    }
    assert outcome.max_event_ms == {0: BASE_MS + 4_000}


def test_pre_epoch_events_use_floor_aligned_windows() -> None:
    parts = _partials(0)
    limits = Limits(max_event_bytes=4_096, min_event_ms=-10**12, max_clock_skew_ms=0, now_ms=MAX_MS)
    _fold([Record(0, 0, _raw("t", -1, 1.5))], parts, limits=limits)
    assert parts[0].values == {
        PartialKey("tumbling_1m", -60_000, "t"): [1, 1.5, 1.5, 1.5, 0],
        PartialKey("hopping_1m", -60_000, "t"): [1, 1.5, 1.5, 1.5, 0],
        PartialKey("hopping_1m", -40_000, "t"): [1, 1.5, 1.5, 1.5, 0],
        PartialKey("hopping_1m", -20_000, "t"): [1, 1.5, 1.5, 1.5, 0],
    }


# -- brute-force reference ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_brute_force_reference_across_partitions(seed: int) -> None:
    rng = random.Random(seed)
    streams = _random_records(rng, partitions=3, per_partition=200)
    records = _interleave(rng, streams)
    ref = _Ref()
    expected_valid = []
    expected_max: dict[int, int] = {}
    for record in records:
        event = _decode(record.raw)
        assert isinstance(event, Event)
        expected_valid.append((record, event))
        expected_max[record.partition] = max(expected_max.get(record.partition, event.event_ms), event.event_ms)
        for spec in WINDOWS:
            for start in _ref_starts(spec, event.event_ms):
                ref.add(record.partition, record.offset, PartialKey(spec.name, start, event.event_type), event.value)

    parts = _partials(0, 1, 2)
    outcome = _fold(records, parts)

    for p in range(3):
        assert parts[p].values == ref.values[p]
    assert outcome.dirty == {p: set(ref.values[p]) for p in range(3)}
    assert outcome.valid == expected_valid
    assert outcome.max_event_ms == expected_max
    assert outcome.dead_letters == [] and outcome.late == []


@pytest.mark.parametrize("seed", [6, 7])
def test_the_folds_inline_updates_are_the_shared_rule(seed: int) -> None:
    """fold_records writes fold_value and new_partial out inline; batch.restate calls them."""
    rng = random.Random(seed)
    records = _interleave(rng, _random_records(rng, partitions=2, per_partition=150))
    by_rule: dict[int, dict[PartialKey, list[float]]] = {0: {}, 1: {}}
    for record in records:
        event = _decode(record.raw)
        assert isinstance(event, Event)
        for spec in WINDOWS:
            for start in _ref_starts(spec, event.event_ms):
                key = PartialKey(spec.name, start, event.event_type)
                current = by_rule[record.partition].get(key)
                if current is None:
                    by_rule[record.partition][key] = new_partial(event.value, record.offset)
                else:
                    fold_value(current, event.value, record.offset)
    parts = _partials(0, 1)
    _fold(records, parts)
    assert {p: parts[p].values for p in parts} == by_rule


@pytest.mark.parametrize("seed", [4, 5])
def test_any_batch_split_gives_the_single_pass_result(seed: int) -> None:
    rng = random.Random(seed)
    records = _interleave(rng, _random_records(rng, partitions=3, per_partition=120))
    single = _partials(0, 1, 2)
    _fold(records, single)
    split = _partials(0, 1, 2)
    dirty_union: dict[int, set[PartialKey]] = defaultdict(set)
    for batch in _split(rng, records, 30):
        outcome = _fold(batch, split)
        for p, keys in outcome.dirty.items():
            dirty_union[p] |= keys
    assert {p: split[p].values for p in split} == {p: single[p].values for p in single}
    assert dict(dirty_union) == {p: set(single[p].values) for p in single}


# -- replays ------------------------------------------------------------------------------


def test_replaying_a_whole_batch_changes_nothing() -> None:
    rng = random.Random(11)
    records = _interleave(rng, _random_records(rng, partitions=3, per_partition=80))
    parts = _partials(0, 1, 2)
    first = _fold(records, parts)
    snapshot = copy.deepcopy({p: parts[p].values for p in parts})
    again = _fold(records, parts)
    assert {p: parts[p].values for p in parts} == snapshot
    assert _changed(again) == {}
    # The replayed events are still valid (the archive deduplicates them by offset).
    assert again.valid == first.valid
    assert again.max_event_ms == first.max_event_ms
    assert again.late == [] and again.dead_letters == []


def test_overlapping_replays_with_other_boundaries_equal_a_single_pass() -> None:
    rng = random.Random(12)
    streams = _random_records(rng, partitions=2, per_partition=150)
    single = _partials(0, 1)
    _fold(_interleave(rng, streams), single)
    replayed = _partials(0, 1)
    # Each "run" restarts before where the previous one stopped, with other batch cuts.
    for lo, hi in ((0, 60), (25, 110), (100, 101), (40, 150), (149, 150)):
        run = _interleave(rng, {p: streams[p][lo:hi] for p in streams})
        for batch in _split(rng, run, 17):
            _fold(batch, replayed)
    assert {p: replayed[p].values for p in replayed} == {p: single[p].values for p in single}


def test_marker_rule_is_per_key_and_ignores_content() -> None:
    parts = _partials(0)
    key = PartialKey("tumbling_1m", BASE_MS, "click")
    _fold([Record(0, 5, _raw("click", BASE_MS + 1, 1.0))], parts, windows=(TUMBLING,))
    # Offsets 3 and 5 are at or below the key's marker: skipped, whatever they contain.
    outcome = _fold([Record(0, 3, _raw("click", BASE_MS + 2, 100.0)), Record(0, 5, _raw("click", BASE_MS, -100.0))],
                    parts, windows=(TUMBLING,))
    assert parts[0].values == {key: [1, 1.0, 1.0, 1.0, 5]}
    assert _changed(outcome) == {}
    # A lower offset is still new for another key: the marker is per key, not per partition.
    other = PartialKey("tumbling_1m", BASE_MS, "view")
    outcome = _fold([Record(0, 4, _raw("view", BASE_MS + 3, 2.0))], parts, windows=(TUMBLING,))
    assert parts[0].values == {key: [1, 1.0, 1.0, 1.0, 5], other: [1, 2.0, 2.0, 2.0, 4]}
    assert outcome.dirty == {0: {other}}
    outcome = _fold([Record(0, 6, _raw("click", BASE_MS + 4, -3.0))], parts, windows=(TUMBLING,))
    assert parts[0].values[key] == [2, -2.0, -3.0, 1.0, 6]
    assert outcome.dirty == {0: {key}}


def test_markers_of_partitions_are_independent() -> None:
    parts = _partials(0, 1)
    _fold([Record(0, 50, _raw("t", BASE_MS, 1.0))], parts, windows=(TUMBLING,))
    outcome = _fold([Record(1, 10, _raw("t", BASE_MS, 2.0))], parts, windows=(TUMBLING,))
    key = PartialKey("tumbling_1m", BASE_MS, "t")
    assert parts[0].values == {key: [1, 1.0, 1.0, 1.0, 50]}
    assert parts[1].values == {key: [1, 2.0, 2.0, 2.0, 10]}
    assert outcome.dirty == {1: {key}}


# -- late records and frontiers -----------------------------------------------------------


def test_late_record_lists_every_closed_window_and_counts_in_open_ones() -> None:
    parts = _partials(0)
    event_ms = BASE_MS + 45_000  # tumbling [B, B+60s); hopping [B, B+60s), [B+20s, B+80s), [B+40s, B+100s)
    frontier = BASE_MS + 60_000  # closes every window ending at or before B+60s
    record = Record(0, 9, _raw("click", event_ms, 4.0))
    outcome = _fold([record], parts, frontiers={0: frontier})
    event = Event("u1", "click", event_ms, 4.0)
    assert outcome.late == [LateEvent(record, event, (("tumbling_1m", BASE_MS), ("hopping_1m", BASE_MS)))]
    open_keys = {PartialKey("hopping_1m", BASE_MS + start, "click") for start in (20_000, 40_000)}
    assert parts[0].values == {key: [1, 4.0, 4.0, 4.0, 9] for key in open_keys}
    assert outcome.dirty == {0: open_keys}
    assert outcome.valid == [(record, event)]
    assert outcome.max_event_ms == {0: event_ms}


def test_window_ending_exactly_one_ms_after_the_frontier_is_open() -> None:
    parts = _partials(0)
    record = Record(0, 0, _raw("t", BASE_MS, 1.0))
    outcome = _fold([record], parts, frontiers={0: BASE_MS + 59_999}, windows=(TUMBLING,))
    assert outcome.late == []
    assert parts[0].values == {PartialKey("tumbling_1m", BASE_MS, "t"): [1, 1.0, 1.0, 1.0, 0]}


def test_record_late_for_every_window_is_still_valid_but_changes_no_partial() -> None:
    parts = _partials(0)
    record = Record(0, 3, _raw("t", BASE_MS, 1.0))
    outcome = _fold([record], parts, frontiers={0: BASE_MS + 100_000})
    assert outcome.late == [LateEvent(record, Event("u1", "t", BASE_MS, 1.0), (
        ("tumbling_1m", BASE_MS), ("hopping_1m", BASE_MS - 40_000), ("hopping_1m", BASE_MS - 20_000),
        ("hopping_1m", BASE_MS)))]
    assert parts[0].values == {}
    assert _changed(outcome) == {}
    assert outcome.valid == [(record, Event("u1", "t", BASE_MS, 1.0))]
    assert outcome.max_event_ms == {0: BASE_MS}


def test_frontier_applies_only_to_its_partition_and_none_closes_nothing() -> None:
    parts = _partials(0, 1, 2)
    raw = _raw("t", BASE_MS, 1.0)
    outcome = _fold([Record(0, 0, raw), Record(1, 0, raw), Record(2, 0, raw)], parts,
                    frontiers={0: BASE_MS + 60_000, 1: None}, windows=(TUMBLING,))
    assert [late.record.partition for late in outcome.late] == [0]
    key = PartialKey("tumbling_1m", BASE_MS, "t")
    assert parts[0].values == {}
    assert parts[1].values == {key: [1, 1.0, 1.0, 1.0, 0]}
    assert parts[2].values == {key: [1, 1.0, 1.0, 1.0, 0]}


def test_the_future_bound_is_relative_to_when_the_record_was_written() -> None:
    # Judged by the record's Kafka timestamp when it has one, so a re-read later judges it alike.
    limits = Limits(max_event_bytes=4_096, min_event_ms=MIN_MS, max_clock_skew_ms=1_000, now_ms=BASE_MS + 10**9)
    records = [Record(0, 0, _raw("t", BASE_MS + 1_000, 1.0), written_ms=BASE_MS),
               Record(0, 1, _raw("t", BASE_MS + 1_001, 1.0), written_ms=BASE_MS),
               Record(0, 2, _raw("t", BASE_MS + 5_000, 1.0))]  # no timestamp: the wall clock
    outcome = _fold(records, _partials(0), limits=limits, windows=(TUMBLING,))
    assert [dead.record.offset for dead in outcome.dead_letters] == [1]
    assert [record.offset for record, _ in outcome.valid] == [0, 2]


# -- dead letters and limits --------------------------------------------------------------


def _good(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {"user_id": "u", "event_type": "t", "timestamp": BASE_MS, "value": 1.0}
    fields.update(overrides)
    return orjson.dumps({k: v for k, v in fields.items() if v is not _DROP})


_DROP = object()
_NON_FINITE_RAW = b'{"non-finite": "stub"}'
REJECTED = {
    INVALID_JSON: b'{"user_id": ',
    NOT_AN_OBJECT: b"[1, 2]",
    MISSING_FIELD: _good(value=_DROP),
    WRONG_TYPE: _good(value="3"),
    NON_FINITE_VALUE: _NON_FINITE_RAW,
    BAD_TIMESTAMP: _good(timestamp="yesterday"),
    TIMESTAMP_OUT_OF_RANGE: _good(timestamp=MAX_MS + 1),
    OVERSIZED: _good(user_id="x" * 5_000),
    BAD_STRING: _good(event_type=""),
}


def test_every_rejection_becomes_a_dead_letter_with_original_bytes_and_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # orjson never yields a non-finite number; stand in for a more permissive parser on one input.
    real_loads = orjson.loads

    def loads(raw: bytes) -> Any:
        if raw == _NON_FINITE_RAW:
            return {"user_id": "u", "event_type": "t", "timestamp": BASE_MS, "value": float("inf")}
        return real_loads(raw)

    monkeypatch.setattr(events, "orjson", types.SimpleNamespace(loads=loads, JSONDecodeError=orjson.JSONDecodeError))
    assert set(REJECTED) == REJECTION_REASONS
    parts = _partials(0, 1)
    good = Record(0, 1, _good())
    records = [good]
    for index, raw in enumerate(REJECTED.values()):
        records.append(Record(index % 2, 1_000 + index, raw))
    records.append(Record(1, 2_000, _good(value=2.0)))
    outcome = _fold(records, parts, windows=(TUMBLING,))

    assert [dead.record for dead in outcome.dead_letters] == records[1:-1]
    assert [dead.rejection.reason for dead in outcome.dead_letters] == list(REJECTED)
    for dead in outcome.dead_letters:
        assert dead == DeadLetter(dead.record, _decode(dead.record.raw))
        assert dead.record.raw is REJECTED[dead.rejection.reason]
    assert outcome.dead_letters[list(REJECTED).index(OVERSIZED)].rejection == Rejection(
        OVERSIZED, f"record is {len(REJECTED[OVERSIZED])} bytes, max 4096")
    assert outcome.dead_letters[list(REJECTED).index(TIMESTAMP_OUT_OF_RANGE)].rejection == Rejection(
        TIMESTAMP_OUT_OF_RANGE, f"timestamp {MAX_MS + 1} ms outside [{MIN_MS}, {MAX_MS}]")
    key = PartialKey("tumbling_1m", BASE_MS, "t")
    assert [record for record, _ in outcome.valid] == [good, records[-1]]
    assert parts[0].values == {key: [1, 1.0, 1.0, 1.0, 1]}
    assert parts[1].values == {key: [1, 2.0, 2.0, 2.0, 2_000]}
    assert outcome.max_event_ms == {0: BASE_MS, 1: BASE_MS}
    assert outcome.late == []


def test_dead_letters_only_touch_no_partition_state() -> None:
    parts = _partials(0)
    outcome = _fold([Record(0, 0, b"{"), Record(0, 1, b"[]")], parts)
    assert outcome.dirty == {} and outcome.max_event_ms == {} and outcome.valid == []
    assert parts[0].values == {}
    assert len(outcome.dead_letters) == 2


def test_size_limit_is_inclusive() -> None:
    raw = _good()
    limits = Limits(max_event_bytes=len(raw), min_event_ms=MIN_MS, max_clock_skew_ms=0, now_ms=MAX_MS)
    smaller = Limits(max_event_bytes=len(raw) - 1, min_event_ms=MIN_MS, max_clock_skew_ms=0, now_ms=MAX_MS)
    accepted = _fold([Record(0, 0, raw)], _partials(0), limits=limits)
    rejected = _fold([Record(0, 0, raw)], _partials(0), limits=smaller)
    assert [r for r, _ in accepted.valid] == [Record(0, 0, raw)]
    assert rejected.dead_letters == [
        DeadLetter(Record(0, 0, raw), Rejection(OVERSIZED, f"record is {len(raw)} bytes, max {len(raw) - 1}"))]


def test_timestamp_range_is_inclusive() -> None:
    limits = Limits(max_event_bytes=4_096, min_event_ms=BASE_MS, max_clock_skew_ms=59_999, now_ms=BASE_MS)
    records = [Record(0, i, _good(timestamp=ts))
               for i, ts in enumerate((BASE_MS - 1, BASE_MS, BASE_MS + 59_999, BASE_MS + 60_000))]
    parts = _partials(0)
    outcome = _fold(records, parts, limits=limits, windows=(TUMBLING,))
    assert [dead.record.offset for dead in outcome.dead_letters] == [0, 3]
    assert [dead.rejection for dead in outcome.dead_letters] == [
        Rejection(TIMESTAMP_OUT_OF_RANGE, f"timestamp {BASE_MS - 1} ms outside [{BASE_MS}, {BASE_MS + 59_999}]"),
        Rejection(TIMESTAMP_OUT_OF_RANGE,
                  f"timestamp {BASE_MS + 60_000} ms outside [{BASE_MS}, {BASE_MS + 59_999}]"),
    ]
    assert parts[0].values == {PartialKey("tumbling_1m", BASE_MS, "t"): [2, 2.0, 1.0, 1.0, 2]}
    assert outcome.max_event_ms == {0: BASE_MS + 59_999}


# -- pop_closed ---------------------------------------------------------------------------


def test_pop_closed_removes_exactly_the_windows_ending_at_or_before_the_frontier() -> None:
    parts = _partials(0)
    _fold([Record(0, i, _raw(t, BASE_MS + 45_000, float(i))) for i, t in enumerate(("a", "b"))], parts)
    before = copy.deepcopy(parts[0].values)
    closed = _entries(parts[0].pop_closed(WINDOWS, BASE_MS + 60_000))
    closed_keys = {PartialKey(w, BASE_MS, t) for t in ("a", "b") for w in ("tumbling_1m", "hopping_1m")}
    assert dict(closed) == {key: before[key] for key in closed_keys}
    assert len(closed) == 4
    assert parts[0].values == {
        PartialKey("hopping_1m", BASE_MS + 20_000, "a"): [1, 0.0, 0.0, 0.0, 0],
        PartialKey("hopping_1m", BASE_MS + 40_000, "a"): [1, 0.0, 0.0, 0.0, 0],
        PartialKey("hopping_1m", BASE_MS + 20_000, "b"): [1, 1.0, 1.0, 1.0, 1],
        PartialKey("hopping_1m", BASE_MS + 40_000, "b"): [1, 1.0, 1.0, 1.0, 1],
    }
    assert _entries(parts[0].pop_closed(WINDOWS, BASE_MS + 60_000)) == []
    assert _entries(parts[0].pop_closed(WINDOWS, BASE_MS + 79_999)) == []
    assert _entries(parts[0].pop_closed(WINDOWS, BASE_MS + 80_000)) == [
        (PartialKey("hopping_1m", BASE_MS + 20_000, "a"), [1, 0.0, 0.0, 0.0, 0]),
        (PartialKey("hopping_1m", BASE_MS + 20_000, "b"), [1, 1.0, 1.0, 1.0, 1]),
    ]
    assert _entries(parts[0].pop_closed(WINDOWS, 10**15)) == [
        (PartialKey("hopping_1m", BASE_MS + 40_000, "a"), [1, 0.0, 0.0, 0.0, 0]),
        (PartialKey("hopping_1m", BASE_MS + 40_000, "b"), [1, 1.0, 1.0, 1.0, 1]),
    ]
    assert parts[0].values == {}


# -- model: crashes, restores from a changelog snapshot, replays from the committed offset --

LATENESS_MS = 30_000
_BAD_RAWS = (b"{", b"[]", _good(value="x"), _good(timestamp="nope"), _good(event_type=""))


class _Stage1:
    """What agents/ingest.py keeps per partition, and the changelog it writes, driven as it drives
    fold_batch: per batch the changed partials, then the position; per frontier the position, then
    the deletes of closed partials. A crash restores any prefix of a partition's changelog."""

    def __init__(self, partitions: int) -> None:
        self.parts = _partials(*range(partitions))
        self.frontiers: dict[int, int | None] = {p: None for p in range(partitions)}
        self.fold_next = {p: 0 for p in range(partitions)}
        self.changelog: dict[int, list[tuple[str, Any]]] = {p: [] for p in range(partitions)}
        self.emitted: dict[int, list[tuple[PartialKey, list[float]]]] = defaultdict(list)
        self.late: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
        self.dead: dict[tuple[int, int], Rejection] = {}
        self.late_records = 0

    def _position(self, p: int) -> tuple[str, Any]:
        return ("pos", (self.fold_next[p], self.frontiers[p]))

    def batch(self, records: list[Record]) -> None:
        fresh = [r for r in records if r.offset >= self.fold_next[r.partition]]
        outcome = fold_batch(fresh, self.parts, WINDOWS, self.frontiers, LIMITS)
        for p, keys in outcome.dirty.items():
            for key in sorted(keys):
                self.emitted[p].append((key, list(self.parts[p].values[key])))
                self.changelog[p].append(("put", (key, list(self.parts[p].values[key]))))
        for late in outcome.late:
            position = (late.record.partition, late.record.offset)
            assert self.late.setdefault(position, late.closed) == late.closed
            self.late_records += 1
        for dead in outcome.dead_letters:
            position = (dead.record.partition, dead.record.offset)
            assert self.dead.setdefault(position, dead.rejection) == dead.rejection
        for p in {r.partition for r in fresh}:
            self.fold_next[p] = max(r.offset for r in fresh if r.partition == p) + 1
            self.changelog[p].append(self._position(p))

    def tick(self, low_ms: int) -> None:
        for p in sorted(self.parts):
            previous = self.frontiers[p]
            if previous is not None and low_ms <= previous:
                continue
            closed = self.parts[p].pop_closed(WINDOWS, low_ms)
            self.frontiers[p] = low_ms
            self.changelog[p].append(self._position(p))
            self.changelog[p].extend(("delete", key) for key, _ in _entries(closed))

    def restore(self, p: int, length: int) -> None:
        """Rebuild partition p from the first `length` writes of its changelog, as a new owner would."""
        log = self.changelog[p][:length]
        values: dict[PartialKey, list[float]] = {}
        fold_next, frontier = 0, None
        for kind, item in log:
            if kind == "put":
                values[item[0]] = list(item[1])
            elif kind == "delete":
                values.pop(item, None)
            else:
                fold_next, frontier = item
        self.parts[p] = PartitionPartials(p, values)
        if frontier is not None:
            self.parts[p].pop_closed(WINDOWS, frontier)  # what ingest drops at open
        self.frontiers[p] = frontier
        self.fold_next[p] = fold_next
        self.changelog[p] = log


def _frontier_schedule(order: list[Record], decoded: list[Event | Rejection], partitions: int,
                       ticks: list[int]) -> dict[int, int]:
    """Frontier at each tick: the low watermark (min of per-partition max event time) minus lateness."""
    schedule = {}
    highest: dict[int, int] = {}
    position = 0
    for tick in ticks:
        while position < tick:
            event = decoded[position]
            if isinstance(event, Event):
                p = order[position].partition
                highest[p] = max(highest.get(p, event.event_ms), event.event_ms)
            position += 1
        if len(highest) == partitions:
            schedule[tick] = min(highest.values()) - LATENESS_MS
    return schedule


def _stage2(rng: random.Random, emitted: dict[int, list[tuple[PartialKey, list[float]]]]) -> dict[PartialKey, Totals]:
    """Deliver every emission through the wire format, reordered across partitions, with duplicates."""
    streams = {}
    for p, messages in emitted.items():
        stream = []
        for index, message in enumerate(messages):
            stream.append(message)
            if rng.random() < 0.2:
                stream.append(messages[rng.randint(0, index)])  # a redelivery of an earlier message
        streams[p] = [(p, key, partial) for key, partial in stream]
    parts: dict[PartialKey, dict[int, list[float]]] = defaultdict(dict)
    for p, key, partial in _interleave(rng, streams):
        [body] = partials_messages(p, [(key, partial)])
        message = decode_stage_message(body)
        assert isinstance(message, PartialColumns)
        [(decoded_key, decoded)] = message.entries
        merge_partial(parts[decoded_key], message.partition, decoded)
    return {key: combine(by_partition) for key, by_partition in parts.items()}


@pytest.mark.parametrize("seed", [21, 22, 23, 24, 25])
def test_crashes_and_replays_give_the_clean_single_pass_result(seed: int) -> None:
    rng = random.Random(seed)
    n_partitions = 3
    streams = _random_records(rng, n_partitions, per_partition=130)
    for p in streams:  # some invalid records too
        streams[p] = [Record(r.partition, r.offset, rng.choice(_BAD_RAWS)) if rng.random() < 0.06 else r
                      for r in streams[p]]
    order = _interleave(rng, streams)
    decoded = [_decode(record.raw) for record in order]
    total = len(order)
    ticks = sorted(rng.sample(range(1, total), 14))
    schedule = _frontier_schedule(order, decoded, n_partitions, ticks)
    assert len(schedule) >= 10

    # Brute-force expectation: a record counts in a window unless the frontier in force when it
    # was first processed (the last tick at or before its position) had closed that window.
    ref = _Ref()
    expected_late: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
    expected_dead: dict[tuple[int, int], Rejection] = {}
    frontier: int | None = None
    for position, (record, event) in enumerate(zip(order, decoded, strict=True)):
        frontier = schedule.get(position, frontier)
        if isinstance(event, Rejection):
            expected_dead[(record.partition, record.offset)] = event
            continue
        missed = []
        for spec in WINDOWS:
            for start in _ref_starts(spec, event.event_ms):
                if frontier is not None and start + spec.size_ms <= frontier:
                    missed.append((spec.name, start))
                else:
                    ref.add(record.partition, record.offset, PartialKey(spec.name, start, event.event_type),
                            event.value)
        if missed:
            expected_late[(record.partition, record.offset)] = tuple(missed)
    assert expected_late and expected_dead

    # Clean run.
    clean = _Stage1(n_partitions)
    position = 0
    while position < total:
        if position in schedule:
            clean.tick(schedule[position])
        end = min([position + rng.randint(1, 25), total] + [t for t in ticks if t > position])
        clean.batch(order[position:end])
        position = end

    # Crashing run: a crash restores each partition from any prefix of its changelog, and the
    # input resumes at the earliest position any partition restored.
    run = _Stage1(n_partitions)
    crashes = replayed = 0
    position = 0
    while position < total:
        if position in schedule:
            run.tick(schedule[position])
        end = min([position + rng.randint(1, 25), total] + [t for t in ticks if t > position])
        run.batch(order[position:end])
        position = end
        if crashes < 6 and position < total and rng.random() < 0.12:
            crashes += 1
            for p in range(n_partitions):
                run.restore(p, rng.randint(0, len(run.changelog[p])))
            restart = min((i for i, r in enumerate(order) if r.offset >= run.fold_next[r.partition]),
                          default=total)
            replayed += position - restart
            position = restart
    assert crashes >= 1 and replayed > 0

    for p in range(n_partitions):
        assert run.parts[p].values == clean.parts[p].values
        assert run.frontiers[p] == clean.frontiers[p]
        # The last partial each partition sent per key (highest marker) is the reference partial.
        for emitted in (clean.emitted[p], run.emitted[p]):
            last: dict[PartialKey, list[float]] = {}
            for key, partial in emitted:
                if key not in last or partial[MARKER] > last[key][MARKER]:
                    last[key] = partial
            assert last == ref.values[p]
    assert clean.late == expected_late and run.late == expected_late
    assert clean.late_records == len(expected_late)
    assert clean.dead == expected_dead and run.dead == expected_dead

    expected_totals = ref.totals()
    assert _stage2(rng, clean.emitted) == expected_totals
    assert _stage2(rng, run.emitted) == expected_totals


def test_a_slot_is_routed_once_however_often_it_is_flushed() -> None:
    instance = InstancePartials("w", 0)
    for key in ("a", "bb"):
        instance.put(key, [1, 1.0, 1.0, 1.0, 0])
    asked: list[list[str]] = []

    def route(keys: list[str]) -> list[int]:
        asked.append(keys)
        return [10 + len(key) for key in keys]

    assert instance.routes([0, 1], route) == [11, 12]
    instance.put("ccc", [1, 1.0, 1.0, 1.0, 0])
    assert instance.routes([1, 2], route) == [12, 13]
    assert instance.routes([0, 2], route) == [11, 13]
    assert asked == [["a", "bb"], ["ccc"]]
