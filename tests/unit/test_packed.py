"""Packs (tables/packed.py): any prefix of the writes restores the keys' newest values, a dropped
window never comes back once its forget is in the prefix, and the records stay bounded by the
open keys, over random writes, forgets, crashes and restores."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import orjson
import pytest

from tables.packed import PACK_BYTES, Packs
from tables.partials import PartialKey

PREFIX = b"kp|"
Log = list[tuple[bytes, bytes | None]]


def _compacted(log: Log) -> dict[bytes, bytes]:
    items: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            items.pop(key, None)
        else:
            items[key] = value
    return items


class Recorder:
    def __init__(self) -> None:
        self.log: Log = []

    async def put(self, key: bytes, value: bytes | None) -> None:
        self.log.append((key, value))


def _random_run(seed: int, steps: int = 60) -> None:
    rng = random.Random(seed)
    types = [f"t{i}" for i in range(rng.choice((3, 40, 300)))]
    windows = [("tumbling_1m", 60_000), ("hopping_1m", 30_000)]
    recorder = Recorder()
    packs = Packs(PREFIX)
    model: dict[PartialKey, Any] = {}
    open_windows: set[tuple[str, int]] = set()
    boundaries = [(0, {})]  # (log length, model) after each operation
    next_start = {name: 0 for name, _ in windows}
    version = 0
    for _ in range(steps):
        if open_windows and rng.random() < 0.25:  # drop whole windows, as the stages do
            dropped = rng.sample(sorted(open_windows), rng.randint(1, len(open_windows)))
            keys = [key for key in model if (key.window, key.start_ms) in dropped]
            asyncio.run(packs.forget(recorder.put, keys))
            for key in keys:
                del model[key]
            open_windows.difference_update(dropped)
        else:
            for name, step in windows:  # open a window now and then
                if rng.random() < 0.3 or not any(w == name for w, _ in open_windows):
                    open_windows.add((name, next_start[name]))
                    next_start[name] += step
            changed = {}
            for window, start in rng.sample(sorted(open_windows), rng.randint(1, len(open_windows))):
                for event_type in rng.sample(types, rng.randint(1, len(types))):
                    version += 1
                    value = [version, float(version) / 4, "x" * rng.randint(0, 9)]
                    changed[PartialKey(window, start, event_type)] = value
            asyncio.run(packs.write(recorder.put, list(changed.items())))
            model.update(changed)
        boundaries.append((len(recorder.log), dict(model)))
        live_packs = [key for key in _compacted(recorder.log) if key.startswith(PREFIX)]
        assert len(live_packs) <= max(1, len(model)), "packs are bounded by the open keys"
        for raw in _compacted(recorder.log).values():  # one window instance per pack, whole JSON
            assert set(orjson.loads(raw)) == {"w", "s", "e"} and len(raw) <= PACK_BYTES

    # Restore from every prefix: at an operation's boundary exactly its model; inside an operation,
    # each key old or new, and nothing dropped before the operation comes back.
    for index in range(len(boundaries) - 1):
        (start, before), (end, after) = boundaries[index], boundaries[index + 1]
        for cut in range(start, end + 1):
            _, values = Packs.restored(PREFIX, _compacted(recorder.log[:cut]))
            if cut == end:
                assert values == after
            elif cut == start:
                assert values == before
            else:
                for key, value in values.items():
                    assert value in (before.get(key), after.get(key)), key
                assert set(values) <= set(before) | set(after)
                assert set(before) & set(after) <= set(values)


@pytest.mark.parametrize("seed", range(12))
def test_any_prefix_restores_the_newest_values_and_stays_bounded(seed: int) -> None:
    _random_run(seed)


@pytest.mark.parametrize("seed", range(6))
def test_a_restored_state_goes_on_exactly(seed: int) -> None:
    """Restore at a random point, go on writing and forgetting, restore again: the reference model."""
    rng = random.Random(100 + seed)
    recorder = Recorder()
    packs = Packs(PREFIX)
    model: dict[PartialKey, Any] = {}
    for step in range(80):
        if rng.random() < 0.15:
            packs, values = Packs.restored(PREFIX, _compacted(recorder.log))
            assert values == model
        window_start = rng.randrange(6) * 60_000
        if rng.random() < 0.2:
            keys = [key for key in model if key.start_ms == window_start]
            asyncio.run(packs.forget(recorder.put, keys))
            for key in keys:
                del model[key]
        else:
            changed = {PartialKey("w", window_start, f"t{rng.randrange(30)}"): [step, rng.random()]
                       for _ in range(rng.randint(1, 20))}
            asyncio.run(packs.write(recorder.put, list(changed.items())))
            model.update(changed)
    _, values = Packs.restored(PREFIX, _compacted(recorder.log))
    assert values == model
    assert len([k for k in _compacted(recorder.log) if k.startswith(PREFIX)]) <= max(1, len(model))


def test_a_large_flush_is_cut_into_packs_below_the_limit() -> None:
    recorder = Recorder()
    changed = [(PartialKey("w", 0, "t" * 250 + str(i)), [i, 1.5, 1.5, 1.5, i]) for i in range(10_000)]
    asyncio.run(Packs(PREFIX).write(recorder.put, changed))
    assert len(recorder.log) > 1 and all(value is not None and len(value) <= PACK_BYTES for _, value in recorder.log)
    assert len(recorder.log) < 20  # thousands of keys per record, not one record per key
    _, values = Packs.restored(PREFIX, _compacted(recorder.log))
    assert values == dict(changed)


def test_packs_written_again_whole_are_deleted_and_other_keys_are_ignored() -> None:
    recorder = Recorder()
    packs = Packs(PREFIX)
    a, b = PartialKey("w", 0, "a"), PartialKey("w", 0, "b")
    asyncio.run(packs.write(recorder.put, [(a, 1), (b, 1)]))
    asyncio.run(packs.write(recorder.put, [(a, 2)]))
    asyncio.run(packs.write(recorder.put, [(b, 2)]))  # the first pack holds nothing current now
    assert recorder.log[-1] == (PREFIX + b"%016x" % 0, None)
    items = {**_compacted(recorder.log), b"pos": b"{}", b"tp|0000000000000009": b"not ours"}
    _, values = Packs.restored(PREFIX, items)
    assert values == {a: 2, b: 2}
