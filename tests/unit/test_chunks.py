"""encode_in_runs: every item once, in order, each body within the limit, each item encoded about once."""

from __future__ import annotations

import random

import orjson
import pytest

from formats.chunks import encode_in_runs


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_runs_cover_the_items_in_order_and_fit(seed: int) -> None:
    rng = random.Random(seed)
    items = ["x" * rng.randrange(1, 400) for _ in range(rng.randrange(1, 3000))]
    limit = rng.randrange(500, 20_000)
    runs = encode_in_runs(items, orjson.dumps, limit)
    assert [item for _, _, body in runs for item in orjson.loads(body)] == items
    assert [start for start, _, _ in runs] == [0] + [stop for _, stop, _ in runs[:-1]]
    assert runs[-1][1] == len(items)
    for start, stop, body in runs:
        assert body == orjson.dumps(items[start:stop])
        assert len(body) <= limit or stop - start == 1


def test_one_item_over_the_limit_is_a_body_of_its_own() -> None:
    runs = encode_in_runs(["a", "b" * 100, "c"], orjson.dumps, 50)
    assert [orjson.loads(body) for _, _, body in runs] == [["a"], ["b" * 100], ["c"]]


def test_a_long_list_is_encoded_about_once() -> None:
    encoded = []

    def encode(run: list[str]) -> bytes:
        encoded.append(len(run))
        return orjson.dumps(run)

    items = [f"type-{i:05d}" for i in range(20_000)]  # 260 KB: at least 16 bodies of 16 KiB
    runs = encode_in_runs(items, encode, 16 * 1024)
    assert len(runs) >= 16
    assert sum(encoded) <= 1.1 * len(items)  # its first items measured, then each run once
