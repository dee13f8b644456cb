"""Many window keys of a stage's state in few changelog records: packs.

With one changelog record per window key, a flush that changed 10,000 keys (one per event
type) costs 10,000 sends, which is what capped the pipeline with many event types. A
flush instead writes the keys it changed as packs: records of the keys of one window
instance (window, start), up to PACK_BYTES each, under a new sequence number. A key's
value is the one in the newest pack holding it. A pack whose keys are all current in newer
packs, or forgotten, is deleted (a tombstone), so that compaction still bounds the
changelog by the open keys. Packs hold one window instance each because a stage drops
whole windows (closed, exported, or no longer configured): forgetting a window's keys then
empties its packs, and no pack of a dropped window outlives it to bring it back.

Restoring reads the packs in sequence order, each over the older: a prefix of the writes
gives each key its newest value in the prefix. A stage writes its position only after the
packs of the records it covers are acknowledged (tables/store.py), so what a cut-off flush
lacks is redone from the position, as with one record per key. A key forgotten whose pack
survives a crash comes back at restore only if a pack tombstone was cut off: the stages
drop such keys again by the rule that dropped them (the frontier, the export ledger, the
configured windows), whose record precedes the forget. Packs are deleted oldest first, so a key
never comes back with a value older than its newest.

The pack record (formats/state.py): key `prefix + 16 hex digits of the sequence number` (sorted as
written), value one window instance's keys as columns (for stage 1 the partials message it sent, the
same bytes; for stage 2 formats.state.encode_totals_columns). The stages
keep their state by window instance, a slot per event type (tables/partials.InstancePartials,
tables/totals.InstanceTotals), each slot with the sequence number of the pack holding its newest
value (its *holder*, -1 before its first pack); PackBooks counts, per pack, the slots it holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, MutableSequence, Sequence

__all__ = ["NO_PACK", "PackBooks"]

NO_PACK = -1  # the holder of a slot not yet in any pack


Holders = MutableSequence[int]  # a window instance's holder per slot (an array of int)


class PackBooks:
    """How many slots each stored pack holds the newest value of, and which packs to delete.

    Pure bookkeeping: the stage writes the packs it is told to, and deletes the ones take_empty
    returns, oldest first."""

    __slots__ = ("live", "next_seq", "_empty")

    def __init__(self) -> None:
        self.live: dict[int, int] = {}  # pack -> how many slots it holds the newest value of
        self.next_seq = 0
        self._empty: list[int] = []  # packs that hold no newest value: to delete

    # -- restore ----------------------------------------------------------------------------------

    def restore(self, holders: Holders, slot: int, seq: int) -> None:
        """A restored pack `seq` holds `slot` (packs in sequence order, each over the older)."""
        old = holders[slot]
        holders[slot] = seq
        self.live[seq] = self.live.get(seq, 0) + 1
        if old != NO_PACK:
            self.live[old] -= 1
        if seq >= self.next_seq:
            self.next_seq = seq + 1

    def restore_empty(self, seq: int) -> None:
        """A restored pack of no slot at all (deleted at the next take_empty)."""
        self.live.setdefault(seq, 0)
        if seq >= self.next_seq:
            self.next_seq = seq + 1

    def restored(self) -> None:
        """After the last restored pack: those that hold no newest value are to be deleted."""
        empty = [seq for seq, count in self.live.items() if count == 0]
        for seq in empty:
            del self.live[seq]
        self._empty += empty

    # -- writes -----------------------------------------------------------------------------------

    def packed(self, holders: Holders, slots: Sequence[int]) -> int:
        """A new pack holds these slots' newest values: its sequence number. The packs it emptied
        are added to the ones take_empty returns."""
        seq = self.next_seq
        self.next_seq += 1
        before = Counter([holders[slot] for slot in slots])
        for slot in slots:
            holders[slot] = seq
        self.live[seq] = len(slots)
        for old, taken in before.items():
            if old != NO_PACK:
                self._release(old, taken)
        return seq

    def forget(self, holders: Iterable[Holders]) -> None:
        """The slots of dropped window instances: the packs they leave empty go to take_empty."""
        for instance in holders:
            for old, taken in Counter(instance).items():
                if old != NO_PACK:
                    self._release(old, taken)

    def _release(self, seq: int, slots: int) -> None:
        left = self.live[seq] - slots
        if left:
            self.live[seq] = left
        else:
            del self.live[seq]
            self._empty.append(seq)

    def take_empty(self) -> list[int]:
        """The packs to delete, oldest first: a crash part way leaves each key of a dropped window with
        its newest value or none, never an older one that the deleted newer pack had replaced."""
        empty, self._empty = sorted(self._empty), []
        return empty
