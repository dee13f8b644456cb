from __future__ import annotations

import dataclasses
import random
from functools import reduce

import orjson
import pytest

from tables.aggregate import Aggregate


def test_of_single_value() -> None:
    agg = Aggregate.of(2.5)
    assert agg == Aggregate(count=1, sum=2.5, min=2.5, max=2.5)
    assert agg.mean == 2.5


def test_of_int_becomes_float() -> None:
    agg = Aggregate.of(3)
    assert agg.to_list() == [1, 3.0, 3.0, 3.0]
    assert isinstance(agg.sum, float) and isinstance(agg.min, float)


def test_add_matches_independent_computation() -> None:
    rng = random.Random(20240101)
    values = [rng.uniform(-1000, 1000) for _ in range(500)]
    agg = Aggregate.of(values[0])
    for value in values[1:]:
        agg = agg.add(value)
    expected_sum = 0.0
    for value in values:  # same left-to-right order as add()
        expected_sum += value
    assert agg.count == 500
    assert agg.sum == expected_sum
    assert agg.min == min(values)
    assert agg.max == max(values)
    assert agg.mean == expected_sum / 500


def test_merge_of_chunks_equals_add_for_exact_values() -> None:
    # Integers below 2**53 sum exactly, so any grouping must agree.
    rng = random.Random(7)
    values = [float(rng.randint(-(10**6), 10**6)) for _ in range(300)]
    sequential = reduce(Aggregate.add, values[1:], Aggregate.of(values[0]))
    chunks = [values[i : i + 37] for i in range(0, len(values), 37)]
    partials = [reduce(Aggregate.add, chunk[1:], Aggregate.of(chunk[0])) for chunk in chunks]
    merged = reduce(Aggregate.merge, partials)
    assert merged == sequential
    assert merged.merge(sequential) == Aggregate(
        count=600, sum=2 * sequential.sum, min=sequential.min, max=sequential.max
    )


def test_merge_is_left_to_right_for_floats() -> None:
    big, small = Aggregate.of(1e16), Aggregate.of(1.0)
    left = big.merge(small).merge(small)  # (1e16 + 1) + 1: each +1 is rounded away
    right = big.merge(small.merge(small))  # 1e16 + 2: representable
    assert left.sum == 1e16
    assert right.sum == 1e16 + 2
    assert left.count == right.count == 3


def test_to_list_from_list_round_trip_through_json() -> None:
    agg = Aggregate(count=3, sum=-0.30000000000000004, min=-1.5, max=1e300)
    stored = orjson.dumps(agg.to_list())
    assert Aggregate.from_list(orjson.loads(stored)) == agg
    assert Aggregate.from_list((2, 3, 1, 2)) == Aggregate(2, 3.0, 1.0, 2.0)


@pytest.mark.parametrize(
    "data",
    [
        [],
        [1, 2.0, 2.0],
        [1, 2.0, 2.0, 2.0, 5],
        "abcd",
        {"count": 1},
        [1.0, 2.0, 2.0, 2.0],
        [True, 2.0, 2.0, 2.0],
        [0, 0.0, 0.0, 0.0],
        [1, None, 1.0, 1.0],
        [1, 1.0, False, 1.0],
        [1, 1.0, "1", 1.0],
        [2, 3.0, 2.0, 1.0],
    ],
)
def test_from_list_rejects_malformed(data: object) -> None:
    with pytest.raises(ValueError):
        Aggregate.from_list(data)  # type: ignore[arg-type]


def test_constructor_rejects_invalid_and_is_frozen() -> None:
    with pytest.raises(ValueError, match="count"):
        Aggregate(count=0, sum=0.0, min=0.0, max=0.0)
    with pytest.raises(ValueError, match="min"):
        Aggregate.of(float("nan"))
    agg = Aggregate.of(1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        agg.count = 2  # type: ignore[misc]
    assert not hasattr(agg, "__dict__")
