"""PackBooks (tables/packed.py): over random writes of slots and drops of whole window instances, the
packs still stored (written, not yet deleted) are exactly those holding some slot's newest value,
each counted right; a pack is deleted once, oldest first; and restoring the stored packs in
sequence order gives every slot its holder back. (The stages' crash tests check what the packs hold
against their state, across every crash point: tests/unit/test_ingest_stage.py, test_export_stage.py.)"""

from __future__ import annotations

import random
from array import array

import pytest

from formats.state import pack_key, packs_in
from tables.packed import NO_PACK, PackBooks


class Instance:
    def __init__(self, slots: int) -> None:
        self.holder = array("q", [NO_PACK]) * slots


def _check(books: PackBooks, stored: dict[int, list[tuple[int, int]]], instances: dict[int, Instance]) -> None:
    """stored: pack -> the (instance, slot) it was written with."""
    holding: dict[int, int] = {}
    for instance in instances.values():
        for seq in instance.holder:
            if seq != NO_PACK:
                holding[seq] = holding.get(seq, 0) + 1
    assert books.live == holding
    assert set(stored) == set(holding), "a stored pack holds nothing current, or a holding pack was deleted"


def _random_run(seed: int, steps: int = 80) -> None:
    rng = random.Random(seed)
    books = PackBooks()
    instances: dict[int, Instance] = {}
    stored: dict[int, list[tuple[int, int]]] = {}
    next_instance = 0
    for _ in range(steps):
        if instances and rng.random() < 0.2:  # drop whole instances, as the stages do
            dropped = rng.sample(sorted(instances), rng.randint(1, len(instances)))
            books.forget(instances.pop(i).holder for i in dropped)
        else:
            if rng.random() < 0.4 or not instances:
                instances[next_instance] = Instance(rng.choice((1, 5, 40)))
                next_instance += 1
            for i in rng.sample(sorted(instances), rng.randint(1, len(instances))):
                instance = instances[i]
                slots = sorted(rng.sample(range(len(instance.holder)), rng.randint(1, len(instance.holder))))
                cut = rng.randint(1, len(slots))
                for run in (slots[:cut], slots[cut:]):  # a flush cut into two packs
                    if run:
                        seq = books.packed(instance.holder, run)
                        assert seq not in stored
                        stored[seq] = [(i, slot) for slot in run]
        deleted = books.take_empty()
        assert deleted == sorted(deleted) and set(deleted) <= set(stored)
        for seq in deleted:
            del stored[seq]
        _check(books, stored, instances)

        # A restore: the stored packs in sequence order, each over the older, give the same holders.
        restored = PackBooks()
        holders = {i: array("q", [NO_PACK]) * len(instance.holder) for i, instance in instances.items()}
        for seq in sorted(stored):
            restored.restore_empty(seq)
            for i, slot in stored[seq]:
                if i in holders:
                    restored.restore(holders[i], slot, seq)
        restored.restored()
        assert {i: list(h) for i, h in holders.items()} == {i: list(inst.holder) for i, inst in instances.items()}
        assert restored.live == books.live
        leftover = restored.take_empty()  # packs of dropped instances whose delete is still to come: none
        assert leftover == []
        assert restored.next_seq == (max(stored) + 1 if stored else 0)


@pytest.mark.parametrize("seed", range(20))
def test_the_books_name_exactly_the_packs_holding_a_newest_value(seed: int) -> None:
    _random_run(seed)


def test_a_pack_emptied_by_newer_packs_is_deleted_once() -> None:
    books, holder = PackBooks(), array("q", [NO_PACK]) * 2
    assert books.packed(holder, [0, 1]) == 0
    assert books.packed(holder, [0]) == 1
    assert books.take_empty() == []
    assert books.packed(holder, [1]) == 2  # pack 0 holds nothing current now
    assert books.take_empty() == [0] and books.take_empty() == []
    assert books.live == {1: 1, 2: 1} and list(holder) == [1, 2]


def test_a_restored_pack_that_holds_nothing_is_deleted_at_the_next_write() -> None:
    books, holder = PackBooks(), array("q", [NO_PACK])
    for seq in (4, 9):
        books.restore_empty(seq)
        books.restore(holder, 0, seq)
    books.restore_empty(11)  # a pack with no entry at all
    books.restored()
    assert books.live == {9: 1} and books.next_seq == 12
    assert books.take_empty() == [4, 11]


def test_pack_keys_sort_as_written_and_other_keys_are_not_packs() -> None:
    keys = [pack_key(b"kp|", seq) for seq in (0, 9, 10, 2**40)]
    assert keys == sorted(keys) and keys[1] == b"kp|0000000000000009"
    items = {**dict.fromkeys(keys, b"x"), b"pos": b"{}", b"tp|0000000000000003": b"y"}
    assert sorted(packs_in(b"kp|", items)) == [0, 9, 10, 2**40]
