"""Stage 2: merge the partial aggregates of every input partition and decide when a window closes.

Pure logic over plain data; InstanceTotals is stage 2's state, by window instance. Stage 1 sends,
per (window, window_start, event_type), the *cumulative* partial of one input partition with its
offset marker; here the newest partial per input partition replaces the older one, so a replayed
or duplicated partial changes nothing (exactly once in effect without coordination).

Closing. Each input partition also sends its frontier (the low watermark its worker has
announced) to every stage-2 partition, after the partials it covers. A window closes
when every input partition's frontier has reached its end: from then on no partition
can contribute to it (stage 1 treats later records for it as late).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from formats.state import ABSENT_MARKER
from tables.packed import NO_PACK
from tables.partials import COUNT, MARKER, MAX, MIN, SUM

# Per input partition: [count, sum, min, max, marker]
PartsByPartition = dict[int, list[float]]


class Totals(NamedTuple):
    count: int
    sum: float
    min: float
    max: float


def merge_partial(parts: PartsByPartition, partition: int, partial: list[float]) -> bool:
    """Keep the partial with the highest marker for `partition`; True if it changed."""
    current = parts.get(partition)
    if current is not None and current[MARKER] >= partial[MARKER]:
        return False
    parts[partition] = list(partial)
    return True


def combine(parts: Mapping[int, list[float]]) -> Totals:
    """Merge partitions' partials in ascending partition order (float sums are order-sensitive)."""
    count, total, low, high = 0, 0.0, float("inf"), float("-inf")
    for partition in sorted(parts):
        partial = parts[partition]
        count += int(partial[COUNT])
        total += partial[SUM]
        low = min(low, partial[MIN])
        high = max(high, partial[MAX])
    if count == 0:
        raise ValueError("no partial to combine")
    return Totals(count, total, low, high)


class SourceColumns:
    """One input partition's newest partial of each slot of a window instance (marker ABSENT_MARKER: none)."""

    __slots__ = ("count", "total", "low", "high", "marker")

    def __init__(self, slots: int) -> None:
        self.count = array("q", [0]) * slots
        self.total = array("d", [0.0]) * slots
        self.low = array("d", [0.0]) * slots
        self.high = array("d", [0.0]) * slots
        self.marker = array("q", [ABSENT_MARKER]) * slots

    def append_absent(self) -> None:
        self.count.append(0)
        self.total.append(0.0)
        self.low.append(0.0)
        self.high.append(0.0)
        self.marker.append(ABSENT_MARKER)

    def partial(self, slot: int) -> list[float] | None:
        if self.marker[slot] == ABSENT_MARKER:
            return None
        return [self.count[slot], self.total[slot], self.low[slot], self.high[slot], self.marker[slot]]


class InstanceTotals:
    """Stage 2's state of one window instance (window, start): per event type (a slot), the newest
    partial of every input partition, as columns, so that a message, a pack and an export are loops
    over arrays, not over an object per key. `holder[i]` is the pack holding slot i (tables/packed.py),
    and `dirty` the slots changed since they were last written."""

    __slots__ = ("window", "start_ms", "index", "types", "sources", "holder", "dirty")

    def __init__(self, window: str, start_ms: int) -> None:
        self.window = window
        self.start_ms = start_ms
        self.index: dict[str, int] = {}
        self.types: list[str] = []
        self.sources: dict[int, SourceColumns] = {}  # input partition -> its columns
        self.holder = array("q")
        self.dirty: set[int] = set()

    def __len__(self) -> int:
        return len(self.types)

    def slot(self, event_type: str) -> int:
        """The slot of `event_type`, added (with no partial) if it has none."""
        slot = self.index.get(event_type)
        if slot is None:
            slot = self.index[event_type] = len(self.types)
            self.types.append(event_type)
            self.holder.append(NO_PACK)
            for columns in self.sources.values():
                columns.append_absent()
        return slot

    def source(self, partition: int) -> SourceColumns:
        columns = self.sources.get(partition)
        if columns is None:
            columns = self.sources[partition] = SourceColumns(len(self.types))
        return columns

    def merge(self, partition: int, types: Sequence[str], counts: Sequence[int], sums: Sequence[float],
              lows: Sequence[float], highs: Sequence[float], markers: Sequence[int]) -> None:
        """merge_partial for each entry of one input partition's columns, inline (the hot path of stage 2)."""
        columns = self.source(partition)
        count, total, low, high, marker = columns.count, columns.total, columns.low, columns.high, columns.marker
        index, dirty, slot_of = self.index, self.dirty, self.slot
        for event_type, c, s, lo, hi, m in zip(types, counts, sums, lows, highs, markers, strict=True):
            i = index.get(event_type)
            if i is None:
                i = slot_of(event_type)
            elif marker[i] >= m:
                continue  # a replayed or older partial: the newer one stays
            count[i], total[i], low[i], high[i], marker[i] = c, s, lo, hi, m
            dirty.add(i)

    def set(self, slot: int, parts: Mapping[int, Sequence[float]]) -> None:
        """Make `parts` the slot's partials (a restore's way in: a pack holds all of a slot's)."""
        for partition, partial in parts.items():
            columns = self.source(partition)
            count, total, low, high, marker = partial
            columns.count[slot], columns.total[slot], columns.low[slot], columns.high[slot], columns.marker[slot] = \
                int(count), float(total), float(low), float(high), int(marker)

    def parts(self, slot: int) -> dict[int, list[float]]:
        """The slot's partial of each input partition that sent one."""
        found = {p: columns.partial(slot) for p, columns in self.sources.items()}
        return {p: partial for p, partial in sorted(found.items()) if partial is not None}

    def totals(self, slots: Iterable[int]) -> list[Totals]:
        """combine() of each slot's parts, with the same arithmetic in the same partition order."""
        sources = [self.sources[p] for p in sorted(self.sources)]
        result = []
        for i in slots:
            count, total, low, high = 0, 0.0, float("inf"), float("-inf")
            for columns in sources:
                if columns.marker[i] == ABSENT_MARKER:
                    continue
                count += columns.count[i]
                total += columns.total[i]
                low = min(low, columns.low[i])
                high = max(high, columns.high[i])
            if count == 0:
                raise ValueError("no partial to combine")
            result.append(Totals(count, total, low, high))
        return result
