"""Stage 2 (tables/totals.py): replacement by marker, ordered combine, low frontier, and the columns
that write both out."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from formats.state import decode_totals_pack, encode_totals_columns
from tables.totals import InstanceTotals, Totals, combine, merge_partial
from tables.watermark import low_frontier

# -- merge_partial ------------------------------------------------------------------------


def test_first_partial_of_a_partition_is_stored_as_a_copy() -> None:
    parts: dict[int, list[float]] = {}
    partial = [2, 3.5, 1.0, 2.5, 40]
    assert merge_partial(parts, 0, partial) is True
    assert parts == {0: [2, 3.5, 1.0, 2.5, 40]}
    partial[0] = 99  # the caller's list (e.g. the stage-1 table value) keeps changing
    assert parts == {0: [2, 3.5, 1.0, 2.5, 40]}
    assert parts[0] is not partial


def test_higher_marker_replaces_instead_of_adding() -> None:
    parts: dict[int, list[float]] = {}
    merge_partial(parts, 1, [1, 5.0, 5.0, 5.0, 10])
    assert merge_partial(parts, 1, [3, 6.0, -1.0, 5.0, 14]) is True
    assert parts == {1: [3, 6.0, -1.0, 5.0, 14]}
    assert combine(parts) == Totals(3, 6.0, -1.0, 5.0)


@pytest.mark.parametrize("marker", [14, 13, 0, -1])
def test_stale_or_duplicate_partial_is_ignored(marker: int) -> None:
    parts: dict[int, list[float]] = {2: [3, 6.0, -1.0, 5.0, 14]}
    assert merge_partial(parts, 2, [7, 70.0, -7.0, 7.0, marker]) is False
    assert parts == {2: [3, 6.0, -1.0, 5.0, 14]}


def test_partitions_are_kept_apart() -> None:
    parts: dict[int, list[float]] = {}
    assert merge_partial(parts, 0, [1, 1.0, 1.0, 1.0, 100]) is True
    # A lower marker is not stale for another partition: markers are per input partition.
    assert merge_partial(parts, 1, [1, 2.0, 2.0, 2.0, 5]) is True
    assert merge_partial(parts, 0, [1, 9.0, 9.0, 9.0, 50]) is False
    assert parts == {0: [1, 1.0, 1.0, 1.0, 100], 1: [1, 2.0, 2.0, 2.0, 5]}


def test_float_markers_from_the_wire_compare_like_ints() -> None:
    parts: dict[int, list[float]] = {0: [1.0, 1.0, 1.0, 1.0, 7.0]}
    assert merge_partial(parts, 0, [1, 1.0, 1.0, 1.0, 7]) is False
    assert merge_partial(parts, 0, [2, 3.0, 1.0, 2.0, 8]) is True
    assert parts == {0: [2, 3.0, 1.0, 2.0, 8]}


def test_duplicated_and_reordered_delivery_keeps_the_newest_per_partition() -> None:
    rng = random.Random(99)
    # Cumulative partials of 4 input partitions, each sequence in marker order.
    sequences: dict[int, list[list[float]]] = {}
    for p in range(4):
        count, total, low, high, marker = 0, 0.0, float("inf"), float("-inf"), rng.randint(0, 9)
        sequence = []
        for _ in range(rng.randint(1, 12)):
            value = rng.randint(-80, 80) * 0.5
            count, total, low, high = count + 1, total + value, min(low, value), max(high, value)
            marker += rng.randint(1, 3)
            sequence.append([count, total, low, high, marker])
        sequences[p] = sequence
    deliveries = []
    cursors = dict.fromkeys(sequences, 0)
    while any(cursors[p] < len(sequences[p]) for p in sequences):
        p = rng.choice([p for p in sorted(sequences) if cursors[p] < len(sequences[p])])
        deliveries.append((p, sequences[p][cursors[p]]))
        if cursors[p] and rng.random() < 0.4:
            deliveries.append((p, sequences[p][rng.randint(0, cursors[p] - 1)]))  # a late duplicate
        cursors[p] += 1
    parts: dict[int, list[float]] = {}
    changed = [merge_partial(parts, p, partial) for p, partial in deliveries]
    assert parts == {p: sequence[-1] for p, sequence in sequences.items()}
    assert sum(changed) == sum(len(sequence) for sequence in sequences.values())
    last = [sequences[p][-1] for p in sorted(sequences)]
    assert combine(parts) == Totals(
        sum(int(partial[0]) for partial in last),
        ((last[0][1] + last[1][1]) + last[2][1]) + last[3][1],
        min(partial[2] for partial in last),
        max(partial[3] for partial in last),
    )


# -- combine ------------------------------------------------------------------------------


def test_combine_exact_values() -> None:
    parts = {0: [2, 3.5, 1.25, 2.25, 10], 3: [1, -4.0, -4.0, -4.0, 2], 1: [4, 10.0, 0.5, 6.0, 8]}
    totals = combine(parts)
    assert totals == Totals(count=7, sum=9.5, min=-4.0, max=6.0)
    assert type(totals.count) is int


def test_combine_adds_in_ascending_partition_order_not_insertion_order() -> None:
    # 1e16 + 1 rounds back to 1e16, so the order of the float additions shows in the result.
    parts = {2: [1, 1.0, 1.0, 1.0, 5], 1: [1, 1.0, 1.0, 1.0, 5], 0: [1, 1e16, 1e16, 1e16, 5]}
    assert combine(parts).sum == 1e16  # ((0 + 1e16) + 1) + 1
    reversed_parts = {0: [1, 1.0, 1.0, 1.0, 5], 1: [1, 1.0, 1.0, 1.0, 5], 2: [1, 1e16, 1e16, 1e16, 5]}
    assert combine(reversed_parts).sum == 1e16 + 2  # ((0 + 1) + 1) + 1e16
    assert combine(dict(reversed(list(reversed_parts.items())))) == combine(reversed_parts)


def test_combine_of_float_counts_from_the_wire_gives_an_int_count() -> None:
    totals = combine({0: [3.0, 1.5, 0.5, 0.5, 9.0], 1: [2.0, -1.0, -0.5, -0.5, 4.0]})
    assert totals == Totals(5, 0.5, -0.5, 0.5)
    assert type(totals.count) is int


def test_combine_single_partition_is_its_partial() -> None:
    assert combine({5: [1, -0.25, -0.25, -0.25, 0]}) == Totals(1, -0.25, -0.25, -0.25)


def test_combine_of_nothing_raises() -> None:
    with pytest.raises(ValueError, match="^no partial to combine$"):
        combine({})


# -- low_frontier -------------------------------------------------------------------------


def test_low_frontier_waits_for_every_partition() -> None:
    assert low_frontier({}, 3) is None
    assert low_frontier({0: 100, 1: 200}, 3) is None
    assert low_frontier({0: 100, 2: 50}, 3) is None
    assert low_frontier({0: 100, 1: 200, 2: 150}, 3) == 100
    assert low_frontier({0: 100, 1: 200, 2: 50}, 3) == 50


def test_low_frontier_ignores_partitions_outside_the_source_range() -> None:
    assert low_frontier({0: 100, 1: 200, 7: 1}, 2) == 100
    assert low_frontier({1: 200, 2: 300, 3: 1}, 3) is None  # 0 is missing; 3 does not count
    assert low_frontier({-1: 5, 0: 10}, 1) == 10


def test_low_frontier_of_no_source_partitions_is_none() -> None:
    assert low_frontier({0: 100}, 0) is None
    assert low_frontier({0: 100}, -1) is None


def test_low_frontier_of_negative_times() -> None:
    assert low_frontier({0: -5, 1: -60_000}, 2) == -60_000


# -- InstanceTotals: merge_partial and combine written out over columns --------------------


@pytest.mark.parametrize("seed", range(8))
def test_instance_totals_follow_merge_partial_and_combine(seed: int) -> None:
    """Stage 2's columns merge by merge_partial's rule and total by combine's arithmetic, bit for bit,
    over deliveries in any order, with replays, older partials and partitions that sent nothing."""
    rng = random.Random(seed)
    types = [f"t{i}" for i in range(rng.choice((1, 5, 30)))]
    instance = InstanceTotals("w", 0)
    reference: dict[str, dict[int, list[float]]] = {}
    for _ in range(300):
        partition = rng.randrange(4)
        entries = []
        for event_type in rng.sample(types, rng.randint(1, len(types))):
            value = rng.choice((-0.0, 0.1, -2.5, 1e300, rng.uniform(-1e6, 1e6)))
            entries.append((event_type, [rng.randint(1, 9), value, min(value, -1.0), max(value, 1.0),
                                         rng.randrange(50)]))
            merge_partial(reference.setdefault(event_type, {}), partition, entries[-1][1])
        instance.merge(partition, *map(list, zip(*[(t, *p) for t, p in entries], strict=True)))
    slots = [instance.index[t] for t in sorted(reference)]
    assert {t: instance.parts(instance.index[t]) for t in reference} == reference
    got = instance.totals(slots)
    want = [combine(reference[t]) for t in sorted(reference)]
    assert got == want
    assert [math.copysign(1.0, t.sum) for t in got] == [math.copysign(1.0, t.sum) for t in want]


# -- sparse rows: a key costs only the partitions that sent it ----------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_each_partition_holds_a_row_only_for_the_keys_it_sent_and_packs_round_trip(seed: int) -> None:
    """A keyed input sends each key from one partition: stage 2 must not hold a partial of every key for
    every partition (NOTES.md, issue 31: 72 bytes per key and partition with 2 measures). A pack of any
    slots gives back every partition's partials of them, and names no partition that sent none."""
    rng = random.Random(seed)
    measures = rng.choice((1, 2))
    keys = [f'["k{i}"]' for i in range(rng.choice((3, 40, 200)))]
    home = {key: rng.randrange(8) for key in keys}  # most of a key's partials come from its partition
    instance = InstanceTotals("a/w", 0, measures)
    reference: dict[str, dict[int, list[float]]] = {}
    for _ in range(60):
        partition = rng.randrange(8)
        chosen = [key for key in keys if home[key] == partition or rng.random() < 0.02]
        if not chosen:
            continue
        entries = []
        for key in rng.sample(chosen, len(chosen)):
            partial: list[float] = []
            for _m in range(measures):
                value = rng.choice((-0.0, 0.25, rng.uniform(-1e6, 1e6)))
                partial += [0, 0.0, 0.0, 0.0] if rng.random() < 0.1 else [rng.randint(1, 9), value, value, value]
            partial.append(rng.randrange(100))
            entries.append((key, partial))
            merge_partial(reference.setdefault(key, {}), partition, partial)
        # A message's columns: the keys, then count, sum, min and max with M values per key, then the markers.
        instance.merge(partition, [key for key, _ in entries],
                       *([v for _, p in entries for v in p[i:-1:4]] for i in range(4)), [p[-1] for _, p in entries])
    sent = {p: sum(1 for parts in reference.values() if p in parts) for p in range(8)}
    assert {p: len(columns) for p, columns in instance.sources.items()} == {p: n for p, n in sent.items() if n}
    for _ in range(5):
        slots = sorted(rng.sample(range(len(instance)), rng.randint(1, len(instance))))
        raw = encode_totals_columns(instance, slots)
        window, start_ms, entries, got_measures = decode_totals_pack(raw)
        assert (window, start_ms, got_measures) == ("a/w", 0, measures)
        assert [(key, parts) for key, parts in entries] == [(instance.types[s], instance.parts(s)) for s in slots]
        named = {int(p) for p in orjson.loads(raw)["p"]}
        assert named == {p for s in slots for p in instance.parts(s)}
        restored = InstanceTotals("a/w", 0, measures)
        for key, parts in entries:
            restored.set(restored.slot(key), parts)
        again = [restored.index[instance.types[s]] for s in slots]
        assert repr(restored.measure_totals(again)) == repr(instance.measure_totals(slots))
