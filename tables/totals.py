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
from itertools import repeat
from typing import NamedTuple

import numpy as np

from formats.state import ABSENT_MARKER
from tables.packed import NO_PACK
from tables.partials import COUNT, MAX, MIN, SUM, held_key, slot_numbers

# A message of at least this many keys is merged as columns (_merge_columns); below it, numpy's fixed cost
# per call is more than the loop's (the article's job sends a few keys per message).
COLUMN_MERGE_MIN = 64
# At least this many new rows are mapped to their slots with numpy (SourceColumns.add_rows), for the same reason.
ROW_MAP_NUMPY_MIN = 64

# Per input partition: its partial ([count, sum, min, max] per measure, then the marker: tables/partials.py)
PartsByPartition = dict[int, list[float]]


class Totals(NamedTuple):
    count: int
    sum: float
    min: float
    max: float


def merge_partial(parts: PartsByPartition, partition: int, partial: list[float]) -> bool:
    """Keep the partial with the highest marker for `partition`; True if it changed."""
    current = parts.get(partition)
    if current is not None and current[-1] >= partial[-1]:  # the marker, last of every partial
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


def combine_measures(parts: Mapping[int, list[float]], measures: int) -> tuple[Totals | None, ...]:
    """combine() of each measure (None: no partition has a value of it); with one measure that every
    partial has, (combine(parts),)."""
    result: list[Totals | None] = []
    for m in range(measures):
        base = 4 * m
        count, total, low, high = 0, 0.0, float("inf"), float("-inf")
        for partition in sorted(parts):
            partial = parts[partition]
            if not partial[base + COUNT]:
                continue
            count += int(partial[base + COUNT])
            total += partial[base + SUM]
            low = min(low, partial[base + MIN])
            high = max(high, partial[base + MAX])
        result.append(Totals(count, total, low, high) if count else None)
    return tuple(result)


def _check_lengths(measures: int, types: Sequence[str], counts: Sequence[int], sums: Sequence[float],
                   lows: Sequence[float], highs: Sequence[float], markers: Sequence[int]) -> None:
    """ValueError unless a message's columns hold one key and marker per entry, M values each for the rest."""
    if not len(counts) == len(sums) == len(lows) == len(highs) == len(types) * measures == len(markers) * measures:
        raise ValueError(f"columns of {len(types)} keys and {measures} measures with unequal lengths")


class SourceColumns:
    """One input partition's newest partials of a window instance's slots, as rows: `row[slot]` is the slot's
    row (-1: this partition sent no partial of it), and the rows' columns hold count, total, low and high (M
    values per row with M measures, as tables.partials.InstancePartials by slot) and the marker. Only the
    slots a partition sent take a row: a key of one input partition costs the others 4 bytes each, not a
    partial each (the input is often keyed, so that each key comes from one partition)."""

    __slots__ = ("measures", "row", "count", "total", "low", "high", "marker")

    def __init__(self, slots: int, measures: int = 1) -> None:
        self.measures = measures
        self.row = array("i", [-1]) * slots
        self.count = array("q")
        self.total = array("d")
        self.low = array("d")
        self.high = array("d")
        self.marker = array("q")

    def __len__(self) -> int:
        """The number of rows: the slots this partition sent."""
        return len(self.marker)

    def extend_absent(self, slots: int) -> None:
        """`slots` more slots with no partial."""
        self.row.extend(repeat(-1, slots))

    def add_rows(self, slots: Sequence[int] | np.ndarray) -> int:
        """Rows for these slots (none held yet), empty: every measure [0, 0.0, 0.0, 0.0], marker ABSENT_MARKER;
        each column grown once. The first new row."""
        first, added = len(self.marker), len(slots)
        cells = 8 * added * self.measures
        for column in (self.count, self.total, self.low, self.high):
            column.frombytes(bytes(cells))  # zeros: 0 and 0.0
        self.marker.extend(repeat(ABSENT_MARKER, added))
        if added < ROW_MAP_NUMPY_MIN:
            row = self.row
            for i, slot in enumerate(slots, first):
                row[slot] = i
        else:
            view = np.frombuffer(self.row, dtype=np.int32)
            view[np.asarray(slots, dtype=np.intp)] = np.arange(first, first + added, dtype=np.int32)
            del view  # an array exporting its buffer cannot grow
        return first

    def rows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The row of each of these slots as intp, and whether this partition holds one: a slot without a
        row gets row 0, so that the result indexes the columns (the caller masks those slots)."""
        rows = np.frombuffer(self.row, dtype=np.int32)[slots].astype(np.intp)
        held = rows >= 0
        rows[~held] = 0
        return rows, held

    def partial(self, slot: int) -> list[float] | None:
        r = self.row[slot]
        if r < 0:
            return None
        measures = self.measures
        if measures == 1:
            return [self.count[r], self.total[r], self.low[r], self.high[r], self.marker[r]]
        partial: list[float] = []
        for i in range(r * measures, r * measures + measures):
            partial += [self.count[i], self.total[i], self.low[i], self.high[i]]
        partial.append(self.marker[r])
        return partial


class InstanceTotals:
    """Stage 2's state of one window instance (window, start): per event type (a slot), the newest
    partial of every input partition, as columns, so that a message, a pack and an export are loops
    over arrays, not over an object per key. `holder[i]` is the pack holding slot i (tables/packed.py),
    and `dirty` the slots changed since they were last written."""

    __slots__ = ("window", "start_ms", "measures", "index", "types", "sources", "holder", "dirty")

    def __init__(self, window: str, start_ms: int, measures: int = 1) -> None:
        self.window = window
        self.start_ms = start_ms
        self.measures = measures
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
            self._open([event_type])
            slot = self.index[event_type]
        return slot

    def _open(self, keys: Sequence[str]) -> None:
        """Slots with no partial for these new keys (distinct), every column grown once for all of them."""
        first = len(self.types)
        keys = list(map(held_key, keys))
        self.index.update(zip(keys, slot_numbers(first, len(keys)), strict=True))
        self.types += keys
        self.holder.extend(repeat(NO_PACK, len(keys)))
        for columns in self.sources.values():
            columns.extend_absent(len(keys))

    def source(self, partition: int) -> SourceColumns:
        columns = self.sources.get(partition)
        if columns is None:
            columns = self.sources[partition] = SourceColumns(len(self.types), self.measures)
        return columns

    def merge(self, partition: int, types: Sequence[str], counts: Sequence[int], sums: Sequence[float],
              lows: Sequence[float], highs: Sequence[float], markers: Sequence[int]) -> None:
        """merge_partial for each entry of one input partition's columns, inline (the hot path of stage 2).
        With M measures, counts, sums, lows and highs hold M values per entry."""
        if len(types) >= COLUMN_MERGE_MIN and self._merge_columns(partition, types, counts, sums, lows, highs, markers):
            return
        if self.measures != 1:
            self._merge_measures(partition, types, counts, sums, lows, highs, markers)
            return
        columns = self.source(partition)
        row, count, total, low, high, marker = columns.row, columns.count, columns.total, columns.low, columns.high, \
            columns.marker
        index, dirty, slot_of = self.index, self.dirty, self.slot
        for event_type, c, s, lo, hi, m in zip(types, counts, sums, lows, highs, markers, strict=True):
            i = index.get(event_type)
            if i is None:
                i = slot_of(event_type)
            r = row[i]
            if r < 0:  # the partition's first partial of this key: a new row
                row[i] = len(marker)
                count.append(c)
                total.append(s)
                low.append(lo)
                high.append(hi)
                marker.append(m)
            elif marker[r] >= m:
                continue  # a replayed or older partial: the newer one stays
            else:
                count[r], total[r], low[r], high[r], marker[r] = c, s, lo, hi, m
            dirty.add(i)

    def _merge_measures(self, partition: int, types: Sequence[str], counts: Sequence[int], sums: Sequence[float],
                        lows: Sequence[float], highs: Sequence[float], markers: Sequence[int]) -> None:
        measures = self.measures
        _check_lengths(measures, types, counts, sums, lows, highs, markers)
        columns = self.source(partition)
        row, count, total, low, high, marker = columns.row, columns.count, columns.total, columns.low, columns.high, \
            columns.marker
        index, dirty, slot_of = self.index, self.dirty, self.slot
        for j, (key, m) in enumerate(zip(types, markers, strict=True)):
            i = index.get(key)
            if i is None:
                i = slot_of(key)
            r = row[i]
            if r < 0:
                r = columns.add_rows((i,))
            elif marker[r] >= m:
                continue  # a replayed or older partial: the newer one stays
            for k in range(measures):
                count[r * measures + k], total[r * measures + k], low[r * measures + k], high[r * measures + k] = \
                    counts[j * measures + k], sums[j * measures + k], lows[j * measures + k], highs[j * measures + k]
            marker[r] = m
            dirty.add(i)

    def _merge_columns(self, partition: int, types: Sequence[str], counts: Sequence[int], sums: Sequence[float],
                       lows: Sequence[float], highs: Sequence[float], markers: Sequence[int]) -> bool:
        """merge() of a large message as column operations: the slots looked up (new keys added) in one pass,
        the partition's rows found (new ones added), then every entry whose marker is newer than its row's
        assigned at once. False (nothing done) for a message that names a key twice, whose entries the loop
        must take in order."""
        measures = self.measures
        _check_lengths(measures, types, counts, sums, lows, highs, markers)
        index = self.index
        slots = [index.get(key) for key in types]
        if None in slots:
            if len(set(types)) != len(types):
                return False
            self._open([key for key, slot in zip(types, slots, strict=True) if slot is None])
            slots = [index[key] for key in types]
        elif len(set(slots)) != len(slots):
            return False
        columns = self.source(partition)  # after the new slots: their appends must precede the views below
        chosen = np.asarray(slots, dtype=np.intp)
        rows, held_rows = columns.rows(chosen)
        new = ~held_rows
        if new.any():
            added = chosen[new]
            first = columns.add_rows(added)
            rows[new] = np.arange(first, first + len(added))
        wanted = np.asarray(markers, dtype=np.int64)
        held = np.frombuffer(columns.marker, dtype=np.int64)
        newer = held[rows] < wanted  # a new row holds ABSENT_MARKER: always older
        picked = rows[newer]
        held[picked] = wanted[newer]
        for column, values, kind in ((columns.count, counts, np.int64), (columns.total, sums, np.float64),
                                     (columns.low, lows, np.float64), (columns.high, highs, np.float64)):
            view = np.frombuffer(column, dtype=kind).reshape(-1, measures)
            view[picked] = np.asarray(values, dtype=kind).reshape(-1, measures)[newer]
        # The views are gone when this returns (an array exporting its buffer cannot grow).
        self.dirty.update(chosen[newer].tolist())
        return True

    def set(self, slot: int, parts: Mapping[int, Sequence[float]]) -> None:
        """Make `parts` the slot's partials (a restore's way in: a pack holds all of a slot's)."""
        measures = self.measures
        for partition, partial in parts.items():
            columns = self.source(partition)
            r = columns.row[slot]
            if r < 0:
                r = columns.add_rows((slot,))
            for k in range(measures):
                count, total, low, high = partial[4 * k:4 * k + 4]
                i = r * measures + k
                columns.count[i], columns.total[i], columns.low[i], columns.high[i] = \
                    int(count), float(total), float(low), float(high)
            columns.marker[r] = int(partial[-1])

    def parts(self, slot: int) -> dict[int, list[float]]:
        """The slot's partial of each input partition that sent one."""
        found = {p: columns.partial(slot) for p, columns in self.sources.items()}
        return {p: partial for p, partial in sorted(found.items()) if partial is not None}

    def measure_totals(self, slots: Iterable[int]) -> list[tuple[Totals | None, ...]]:
        """combine_measures() of each slot's parts, with the same arithmetic in the same partition order."""
        counts, sums, lows, highs = self.measure_columns(np.fromiter(slots, dtype=np.intp))
        return [tuple(Totals(c, s, lo, hi) if c else None for c, s, lo, hi in zip(*row, strict=True))
                for row in zip(counts.tolist(), sums.tolist(), lows.tolist(), highs.tolist(), strict=True)]

    def measure_columns(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """measure_totals() of these slots as columns: counts (int64), sums, mins and maxs (float64), one row
        per slot and one column per measure (a count of 0: no partition has a value of it). Each step is
        combine_measures' for every slot at once: the input partitions in ascending order, a sum the
        sequential sum, min(low, x) and max(high, x) as Python takes them (x only if strictly beyond)."""
        shape = (len(slots), self.measures)
        count = np.zeros(shape, dtype=np.int64)
        total = np.zeros(shape, dtype=np.float64)
        low = np.full(shape, np.inf)
        high = np.full(shape, -np.inf)
        for partition in sorted(self.sources):
            columns = self.sources[partition]
            rows, held = columns.rows(slots)
            if not held.any():
                continue
            c = np.frombuffer(columns.count, dtype=np.int64).reshape(-1, self.measures)[rows]
            present = held[:, None] & (c != 0)
            t, lo, hi = (np.frombuffer(column, dtype=np.float64).reshape(-1, self.measures)[rows]
                         for column in (columns.total, columns.low, columns.high))
            count = np.where(present, count + c, count)
            with np.errstate(over="ignore", invalid="ignore"):  # a sum that overflows is inf (or nan), as in Python
                total = np.where(present, total + t, total)
            low = np.where(present & (lo < low), lo, low)
            high = np.where(present & (hi > high), hi, high)
        return count, total, low, high

    def totals(self, slots: Iterable[int]) -> list[Totals]:
        """combine() of each slot's parts, with the same arithmetic in the same partition order (one measure)."""
        if self.measures != 1:
            raise ValueError(f"totals() of an instance of {self.measures} measures: use measure_totals()")
        sources = [self.sources[p] for p in sorted(self.sources)]
        result = []
        for i in slots:
            count, total, low, high = 0, 0.0, float("inf"), float("-inf")
            for columns in sources:
                r = columns.row[i]
                if r < 0:
                    continue
                count += columns.count[r]
                total += columns.total[r]
                low = min(low, columns.low[r])
                high = max(high, columns.high[r])
            if count == 0:
                raise ValueError("no partial to combine")
            result.append(Totals(count, total, low, high))
        return result
