"""Stage 1's state and its hot path: per input partition, validate records and fold them into the
open partial aggregates of every window they fall in.

Pure logic over plain data (no I/O): the ingest stage (agents/ingest.py) feeds it batches of
(partition, offset, raw bytes) and persists what it returns.

Exactly once under replay. A restarted stage resumes from its stored position, and what a crash
cut off between a flush and that position is read again. Each partial aggregate carries the
highest input offset folded into it (its *marker*), stored with it; a replayed record whose
offset is not above the marker of a key is already in that key and is skipped. Records of one
partition arrive in offset order, so this is exact per key.

Late records. A partition's *frontier* is the low watermark over all input partitions
that its owner had announced for it when the batch began (see agents/ingest.py): every
window ending at or before it is closed for that partition, its final partial already
sent. A record in such a window is late for it: it goes to the late topic and still
counts in its other, open windows. Stage 1 only folds records it has not processed
before (it resumes from its own stored position), so a record is never judged twice.

The fold's rule is fold_value (new_partial for a key's first record); fold_records, the hot path,
writes it out inline (a call per record and key is what it cannot afford), and so does it with the
event-time bound (Limits.latest_event_ms); tests/unit/test_rules.py checks that the inline spellings
agree with the rules. The windows a record falls in, and which of them are closed, come from
tables/windows.py (windows_at), once per slot of event time and batch.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import repeat
from math import gcd
from sys import intern
from typing import NamedTuple, Protocol

import numpy as np

from aggregations.judge import SpecJudge
from formats.events import Event, EventColumns, Rejection, decode_common, decode_event, reject
from formats.partials import PartialKey, key_text
from formats.raw import RawColumns
from tables.families import Family
from tables.packed import NO_PACK, PackBooks
from tables.windows import WindowSpec, is_closed, window_sizes, windows_at

# Partial value layout, a list so that it serializes compactly to the changelog: per measure
# [count, sum, min, max], then the marker (the highest input offset folded in). The article's job has
# one measure, and these name its places; a measure no record had yet is [0, 0.0, 0.0, 0.0].
COUNT, SUM, MIN, MAX, MARKER = range(5)
NO_EVENT_MS = -(2**63)  # below every event time: no valid event yet


def new_partial(value: float, offset: int) -> list[float]:
    """The partial of one record: [count, sum, min, max, marker]."""
    return [1, value, value, value, offset]


def fold_value(current: list[float], value: float, offset: int) -> None:
    """Fold one more record into a partial, in offset order (the sum stays sequential). The rule of
    every fold: fold_records and _open_slot write it out inline, a call per record and key being
    what they cannot afford."""
    current[COUNT] += 1
    current[SUM] += value
    if value < current[MIN]:
        current[MIN] = value
    if value > current[MAX]:
        current[MAX] = value
    current[MARKER] = offset


def new_measures_partial(values: Sequence[float | None], offset: int) -> list[float]:
    """The partial of one record of several measures (None: a measure the record does not have)."""
    partial: list[float] = []
    for value in values:
        partial += [0, 0.0, 0.0, 0.0] if value is None else [1, value, value, value]
    partial.append(offset)
    return partial


def fold_measures(current: list[float], values: Sequence[float | None], offset: int) -> None:
    """fold_value for each measure the record has: the rule of the folds of several measures (one
    measure with a value is fold_value exactly). fold_judged writes it out inline; tests/unit/test_spec_fold.py
    checks it against this rule."""
    for m, value in enumerate(values):
        if value is None:
            continue
        base = 4 * m
        if current[base] == 0:
            current[base:base + 4] = [1, value, value, value]
            continue
        current[base] += 1
        current[base + SUM] += value
        if value < current[base + MIN]:
            current[base + MIN] = value
        if value > current[base + MAX]:
            current[base + MAX] = value
    current[-1] = offset


def held_key(key: str) -> str:
    """A key as the open state of both stages holds it: one string per distinct key in the process
    (sys.intern, which forgets it with its last holder), shared by every window instance that has the key.
    Each batch and message decodes its keys anew, so a key open in three instances of each stage was held
    six times (NOTES.md, issue 31: 62 bytes each for an IoT device's key)."""
    return intern(key)


# The numbers 0..n-1 as int objects, shared by every instance's index: n is the largest instance's size the
# process has seen (1,000,000 keys: 40 MB, kept for the next instances of that size).
_SLOTS: list[int] = []


def slot_numbers(first: int, count: int) -> list[int]:
    """The slot numbers first..first+count-1, as the indexes of both stages' instances hold them: one int
    object per number in the process, not one per instance and key (28 bytes each)."""
    end = first + count
    if end > len(_SLOTS):
        _SLOTS.extend(range(len(_SLOTS), end))
    return _SLOTS[first:end]


class Record(NamedTuple):
    partition: int
    offset: int
    raw: bytes
    written_ms: int = -1  # the Kafka record's timestamp (-1: none)

    # Read as the ConsumerRecord it stands for (RawRecord):
    @property
    def value(self) -> bytes:
        return self.raw

    @property
    def timestamp(self) -> int:
        return self.written_ms


class DeadLetter(NamedTuple):
    record: Record
    rejection: Rejection


class LateEvent(NamedTuple):
    record: Record
    event: Event | None  # None: an event of a spec (fold_judged)
    closed: tuple[tuple[str, int], ...]  # (window or family, start_ms) it missed


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of a valid event. The future bound is relative to when the record was written to
    Kafka (its timestamp), not to when it is processed: a record is judged the same way
    however late it is read again."""

    max_event_bytes: int
    min_event_ms: int
    max_clock_skew_ms: int
    now_ms: int  # the reference for a record without a timestamp

    def latest_event_ms(self, written_ms: int) -> int:
        return (written_ms if written_ms >= 0 else self.now_ms) + self.max_clock_skew_ms

    def decode(self, record: Record) -> Event | Rejection:
        return decode_event(record.raw, max_bytes=self.max_event_bytes, min_event_ms=self.min_event_ms,
                            max_event_ms=self.latest_event_ms(record.written_ms))


@dataclass(slots=True)
class BatchOutcome:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    # partition -> valid events, for the archive (RawColumns: a spec's, as fold_judged finds them)
    columns: dict[int, EventColumns | RawColumns] = field(default_factory=dict)
    max_event_ms: dict[int, int] = field(default_factory=dict)  # partition -> highest valid event time


class InstancePartials:
    """The open partials of one window instance (window, start) of one input partition, as columns:
    slot i holds the key types[i] (an event type in the article's job) and its partial. With many keys
    a new key is then a few appends, not an object, and a flush encodes column slices (NOTES.md,
    Performance). With M measures, count, total, low and high hold M values per slot (slot i's measure
    m at i * M + m); marker, holder and dirty one per slot. `holder[i]` is the pack holding slot i's
    newest stored value (-1: none yet), and `dirty` the slots changed since the last flush."""

    __slots__ = ("window", "start_ms", "measures", "index", "types", "count", "total", "low", "high", "marker",
                 "holder", "dirty", "folding", "targets")

    def __init__(self, window: str, start_ms: int, measures: int = 1) -> None:
        self.window = window
        self.start_ms = start_ms
        self.measures = measures
        self.index: dict[str, int] = {}
        self.types: list[str] = []
        self.count = array("q")
        self.total = array("d")
        self.low = array("d")
        self.high = array("d")
        self.marker = array("q")
        self.holder = array("q")
        self.dirty: set[int] = set()
        # Within one fold_records call only: slot -> its partial as a list, for the slots that get more
        # than one record (an array's item is boxed at every read); written back at the batch's end.
        self.folding: dict[int, list[float]] = {}
        # The stage-2 partition of each slot's key once a flush has routed it (-1: not yet; shorter than the
        # slots when new ones have not been routed): see routes().
        self.targets = array("q")

    def __len__(self) -> int:
        return len(self.types)

    def put(self, key: str, partial: Sequence[float]) -> int:
        """Set the partial of `key` (a restore's way in); its slot."""
        measures = self.measures
        slot = self.index.get(key)
        if slot is None:
            key = held_key(key)
            slot = self.index[key] = slot_numbers(len(self.types), 1)[0]
            self.types.append(key)
            for m in range(measures):
                count, total, low, high = partial[4 * m:4 * m + 4]
                self.count.append(int(count))
                self.total.append(float(total))
                self.low.append(float(low))
                self.high.append(float(high))
            self.marker.append(int(partial[-1]))
            self.holder.append(NO_PACK)
            return slot
        for m in range(measures):
            count, total, low, high = partial[4 * m:4 * m + 4]
            i = slot * measures + m
            self.count[i], self.total[i], self.low[i], self.high[i] = int(count), float(total), float(low), \
                float(high)
        self.marker[slot] = int(partial[-1])
        return slot

    def partial(self, slot: int) -> list[float]:
        measures = self.measures
        if measures == 1:
            return [self.count[slot], self.total[slot], self.low[slot], self.high[slot], self.marker[slot]]
        partial: list[float] = []
        for i in range(slot * measures, slot * measures + measures):
            partial += [self.count[i], self.total[i], self.low[i], self.high[i]]
        partial.append(self.marker[slot])
        return partial

    def open_slots(self, keys: list[str]) -> None:
        """New slots for these keys (distinct, none held yet), empty: every measure [0, 0.0, 0.0, 0.0], no
        record folded (marker -1); each column grown once for all of them."""
        first, added = len(self.types), len(keys)
        keys = list(map(held_key, keys))
        self.index.update(zip(keys, slot_numbers(first, added), strict=True))
        self.types += keys
        cells = 8 * added * self.measures
        for column in (self.count, self.total, self.low, self.high):
            column.frombytes(bytes(cells))  # zeros: 0 and 0.0
        self.marker.extend(repeat(-1, added))
        self.holder.extend(repeat(NO_PACK, added))

    def routes(self, slots: Sequence[int], route: Callable[[list[str]], Sequence[int]]) -> list[int]:
        """The stage-2 partition of each slot's key, `route` of the keys once per slot, not at every flush
        that sends it (a key's partition does not change while the worker runs)."""
        targets, types = self.targets, self.types
        if len(targets) < len(types):
            targets.extend(repeat(-1, len(types) - len(targets)))
        unknown = [slot for slot in slots if targets[slot] < 0]
        if unknown:
            for slot, target in zip(unknown, route([types[slot] for slot in unknown]), strict=True):
                targets[slot] = target
        return [targets[slot] for slot in slots]

    def key(self, slot: int) -> PartialKey:
        return PartialKey(self.window, self.start_ms, self.types[slot])

    def entries(self, slots: Iterable[int] | None = None) -> list[tuple[PartialKey, list[float]]]:
        """(key, partial) of these slots (all by default): for tests and the slow paths."""
        return [(self.key(slot), self.partial(slot)) for slot in (range(len(self)) if slots is None else slots)]


class PartitionPartials:
    """The open partial aggregates of one input partition, by window instance (window, start), so that
    closing a window drops whole instances; and the books of the packs holding their stored values
    (tables/packed.py: a pack holds slots of one window instance; the ingest agent writes and
    deletes the packs the books name)."""

    __slots__ = ("partition", "instances", "books")

    def __init__(self, partition: int, values: Mapping[PartialKey, Sequence[float]] | None = None) -> None:
        self.partition = partition
        self.instances: dict[tuple[str, int], InstancePartials] = {}
        self.books = PackBooks()
        for key, partial in (values or {}).items():
            self.instance(key.window, key.start_ms).put(key.event_type, partial)

    def __len__(self) -> int:
        """The number of open keys."""
        return sum(len(instance) for instance in self.instances.values())

    def instance(self, window: str, start_ms: int, measures: int = 1) -> InstancePartials:
        instance = self.instances.get((window, start_ms))
        if instance is None:
            instance = self.instances[(window, start_ms)] = InstancePartials(window, start_ms, measures)
        return instance

    @property
    def values(self) -> dict[PartialKey, list[float]]:
        """Every open key's partial (a copy; for tests and the slow paths)."""
        return {key: partial for instance in self.instances.values() for key, partial in instance.entries()}

    def restore(self, seq: int, window: str, start_ms: int, entries: Iterable[tuple[str, Sequence[float]]],
                measures: int = 1) -> None:
        """Pack `seq`'s entries (packs in sequence order, each over the older); books.restored() after the last."""
        instance = self.instance(window, start_ms, measures)
        self.books.restore_empty(seq)
        for event_type, partial in entries:
            self.books.restore(instance.holder, instance.put(event_type, partial), seq)

    def dirty_count(self) -> int:
        return sum(len(instance.dirty) for instance in self.instances.values())

    def take_dirty(self) -> list[tuple[InstancePartials, list[int]]]:
        """Each instance with changed slots, and those slots (ascending); they are clean afterwards."""
        dirty = []
        for instance in self.instances.values():
            if instance.dirty:
                dirty.append((instance, sorted(instance.dirty)))
                instance.dirty = set()
        return dirty

    # -- closing ----------------------------------------------------------------------------------

    def drop_windows(self, windows: set[str]) -> list[InstancePartials]:
        """Remove every instance of these windows; the instances."""
        return self._remove([group for group in self.instances if group[0] in windows])

    def pop_closed(self, windows: Sequence[WindowSpec], frontier_ms: int) -> list[InstancePartials]:
        """Remove and return the instances of (configured) windows the frontier has closed."""
        size_ms = window_sizes(tuple(windows))
        return self._remove([(window, start) for window, start in self.instances
                             if window in size_ms and is_closed(start, size_ms[window], frontier_ms)])

    def _remove(self, groups: list[tuple[str, int]]) -> list[InstancePartials]:
        return [self.instances.pop(group) for group in groups]


class RawRecord(Protocol):
    """What folding reads of a record: aiokafka's ConsumerRecord, or a Record."""

    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


def fold_records(
    partition: int,
    records: Iterable[RawRecord],
    partials: PartitionPartials,
    windows: Sequence[WindowSpec],
    frontier_ms: int | None,
    limits: Limits,
    outcome: BatchOutcome,
) -> None:
    """Decode, validate and fold one partition's records, in offset order, into its partials (mutated
    in place, the changed slots marked dirty); what else they give is added to ``outcome``: dead
    letters, late records, the valid events' columns (for the raw archive) and the highest event time.

    The hot path of the pipeline. No object is made per valid record beyond what msgspec decodes:
    a record's window keys depend only on its event type and on its event time's slot of the
    windows' common step (every start it falls in, and whether the frontier closed it, is the
    same for the whole slot), so the cells a slot and type folds into are looked up once per
    batch, and each record updates them in place, in offset order (the sums stay sequential).
    """
    dead_letters, late = outcome.dead_letters, outcome.late
    columns = outcome.columns.get(partition)
    if columns is None:
        columns = outcome.columns[partition] = EventColumns(partition)
    add_offset, add_user_id, add_event_type = columns.offsets.append, columns.user_ids.append, \
        columns.event_types.append
    add_event_ms, add_value = columns.event_ms.append, columns.values.append
    slot_ms = reduce(gcd, (spec.step_ms for spec in windows), 0) or 1
    # Per slot of event time: its windows, open and closed (tables.windows.windows_at: the window
    # starts and the close rule are evaluated once per slot and batch, not per record).
    windows_of: dict[int, tuple[list[tuple[str, int]], tuple[tuple[str, int], ...]]] = {}
    slots: dict[tuple[str, int], _Slot] = {}
    instances = partials.instances
    touched: list[InstancePartials] = []  # the instances with cells folded in lists
    max_bytes, min_ms, skew_ms, now_ms = limits.max_event_bytes, limits.min_event_ms, limits.max_clock_skew_ms, \
        limits.now_ms
    max_event_ms = outcome.max_event_ms.get(partition, NO_EVENT_MS)
    for record in records:
        offset, written_ms = record.offset, record.timestamp
        raw = record.value or b""  # a record without a value (a tombstone) is dead-lettered as empty
        latest_ms = (written_ms if written_ms >= 0 else now_ms) + skew_ms
        fields = decode_common(raw, max_bytes, min_ms, latest_ms)
        if fields is not None:
            user_id, event_type, event_ms, value = fields.user_id, fields.event_type, fields.timestamp, fields.value
        else:
            decoded = decode_event(raw, max_bytes=max_bytes, min_event_ms=min_ms, max_event_ms=latest_ms)
            if isinstance(decoded, Rejection):
                dead_letters.append(DeadLetter(Record(partition, offset, raw, written_ms), decoded))
                continue
            user_id, event_type, event_ms, value = decoded
        add_offset(offset)
        add_user_id(user_id)
        add_event_type(event_type)
        add_event_ms(event_ms)
        add_value(value)
        if event_ms > max_event_ms:
            max_event_ms = event_ms
        time_slot = event_ms - event_ms % slot_ms
        slot_key = (event_type, time_slot)
        slot = slots.get(slot_key)
        if slot is None:
            at = windows_of.get(time_slot)
            if at is None:
                at = windows_of[time_slot] = windows_at(windows, time_slot, frontier_ms)
            slot = slots[slot_key] = _open_slot(instances, at, event_type, value, offset)
        else:
            # The slot's second record in the batch: its cells are folded in lists from now on, one
            # list per cell (cells are shared by slots), written back once at the end of the batch.
            lists = slot[2]
            if lists is None:
                lists = slot[2] = [_folding(instance, i, touched) for instance, i in slot[0]]
            for current in lists:
                if offset > current[MARKER]:  # fold_value, inline
                    current[COUNT] += 1
                    current[SUM] += value
                    if value < current[MIN]:
                        current[MIN] = value
                    if value > current[MAX]:
                        current[MAX] = value
                    current[MARKER] = offset
                # else: a replayed record this key already holds
        if slot[1]:
            late.append(LateEvent(Record(partition, offset, raw, written_ms),
                                  Event(user_id, event_type, event_ms, value), slot[1]))
    if max_event_ms != NO_EVENT_MS:
        outcome.max_event_ms[partition] = max_event_ms
    for instance in touched:  # per cell with more than one record, not per record
        count, total, low, high, marker, dirty = instance.count, instance.total, instance.low, instance.high, \
            instance.marker, instance.dirty
        for i, current in instance.folding.items():
            if current[MARKER] != marker[i]:
                count[i], total[i], low[i], high[i], marker[i] = current
                dirty.add(i)
        instance.folding = {}


def _folding(instance: InstancePartials, i: int, touched: list[InstancePartials]) -> list[float]:
    """The list slot i of `instance` is folded in for the rest of the batch (see fold_records)."""
    current = instance.folding.get(i)
    if current is None:
        if not instance.folding:
            touched.append(instance)
        current = instance.folding[i] = instance.partial(i)
    return current


# The cells one (event type, slot of event time) folds into within one batch, each (instance, slot);
# the (window, start_ms) the frontier had closed; and, from the slot's second record in the batch on,
# its cells' lists (InstancePartials.folding; None before).
_Slot = list  # [cells, missed, lists]


def _open_slot(instances: dict[tuple[str, int], InstancePartials],
               at: tuple[list[tuple[str, int]], tuple[tuple[str, int], ...]], event_type: str, value: float,
               offset: int) -> _Slot:
    """The slot of a batch's first record in it, with that record folded in; `at` is its time slot's
    windows, open and closed (tables.windows.windows_at)."""
    cells = []
    for group in at[0]:
        instance = instances.get(group)
        if instance is None:
            instance = instances[group] = InstancePartials(*group)
        count, total, low, high, marker = instance.count, instance.total, instance.low, instance.high, \
            instance.marker
        index = instance.index
        i = index.get(event_type)
        current = instance.folding.get(i) if instance.folding and i is not None else None
        if current is not None:  # another slot of this batch folds this cell in its list
            if offset > current[MARKER]:  # once per slot and batch: the call is affordable here
                fold_value(current, value, offset)
        elif i is None:  # new_partial, inline
            event_type = held_key(event_type)
            i = index[event_type] = slot_numbers(len(marker), 1)[0]
            instance.types.append(event_type)
            count.append(1)
            total.append(value)
            low.append(value)
            high.append(value)
            marker.append(offset)
            instance.holder.append(NO_PACK)
            instance.dirty.add(i)
        elif offset > marker[i]:  # fold_value, inline
            count[i] += 1
            total[i] += value
            if value < low[i]:
                low[i] = value
            if value > high[i]:
                high[i] = value
            marker[i] = offset
            instance.dirty.add(i)
        cells.append((instance, i))
    return [cells, at[1], None]


class _Rows:
    """The rows one aggregation counts in a batch, in record order, as columns: each row's key text, its
    record's offset, its slot of event time, and each measure's value (NaN: the record has none; a
    counted value is finite). Keys are numbered in order of first appearance (`codes`)."""

    __slots__ = ("measures", "keys", "codes", "offsets", "slots", "values")

    def __init__(self, measures: int) -> None:
        self.measures = measures
        self.keys: dict[str, int] = {}
        self.codes: list[int] = []
        self.offsets: list[int] = []
        self.slots: list[int] = []
        self.values: list[float] = []  # row-major: M values per row

    def add(self, key: str, offset: int, slot: int, values: Sequence[float | None]) -> None:
        keys = self.keys
        code = keys.get(key)
        if code is None:
            code = keys[key] = len(keys)
        self.codes.append(code)
        self.offsets.append(offset)
        self.slots.append(slot)
        self.values += [_NAN if value is None else value for value in values]


_NAN = float("nan")
# The instances a slot of event time folds into, and the windows (family, start) the frontier had closed.
_WindowsAt = tuple[list[InstancePartials], tuple[tuple[str, int], ...]]


def _fold_rows(rows: _Rows, instances_at: Mapping[int, Sequence[InstancePartials]]) -> None:
    """Fold an aggregation's rows of one batch into the open instances of each row's slot of event time
    (`instances_at`), with fold_measures' rule, over columns: per instance, its rows in record order; a
    row whose offset its key's marker already covers is a replay and is skipped; a key's first row
    opens its slot. Sums stay sequential: ufunc.at applies its operands in index order, one at a time,
    and a measure's first value replaces its empty sum as `-0.0 + v` (exactly v, of either zero's sign).
    min and max keep, among equal values (0.0 and -0.0), the first, as `value < low` does: numpy's
    minimum and maximum give their second operand on a tie, so the batch's values go in reversed and
    the stored one last."""
    measures = rows.measures
    texts = list(rows.keys)
    codes = np.array(rows.codes, dtype=np.int64)
    offsets = np.array(rows.offsets, dtype=np.int64)
    slots = np.array(rows.slots, dtype=np.int64)
    values = np.array(rows.values, dtype=np.float64).reshape(-1, measures)
    rising = bool((offsets[1:] > offsets[:-1]).all())
    by_instance: dict[int, tuple[InstancePartials, list[int]]] = {}
    for slot, instances in instances_at.items():
        for instance in instances:
            by_instance.setdefault(id(instance), (instance, []))[1].append(slot)
    for instance, instance_slots in by_instance.values():
        at = np.flatnonzero(np.isin(slots, instance_slots))
        row_codes = codes[at]
        present, first = np.unique(row_codes, return_index=True)
        index = instance.index
        slot_of = np.full(len(texts), -1, dtype=np.int64)
        slot_of[present] = [index.get(texts[code], -1) for code in present.tolist()]
        is_new = slot_of[present] < 0
        if is_new.any():  # new keys, in order of first appearance
            new = present[is_new][np.argsort(first[is_new], kind="stable")]
            instance.open_slots([texts[code] for code in new.tolist()])
            slot_of[new] = [index[texts[code]] for code in new.tolist()]
        row_slots = slot_of[row_codes]
        marker = np.frombuffer(instance.marker, dtype=np.int64)
        if rising:  # Kafka's case: a row's key has no earlier row in the batch at its offset or above
            kept = offsets[at] > marker[row_slots]
        else:
            kept = _not_replayed(row_slots, offsets[at], marker)
        row_slots, kept_at = row_slots[kept], at[kept]
        if not len(row_slots):
            continue
        np.maximum.at(marker, row_slots, offsets[kept_at])
        count = np.frombuffer(instance.count, dtype=np.int64)
        total = np.frombuffer(instance.total, dtype=np.float64)
        low = np.frombuffer(instance.low, dtype=np.float64)
        high = np.frombuffer(instance.high, dtype=np.float64)
        for m in range(measures):
            column = values[kept_at, m]
            has = ~np.isnan(column)
            if not has.any():
                continue
            cells, column = row_slots[has] * measures + m, column[has]
            # The cells the batch touches, a cell as often as it has rows (no np.unique: its sort cost more than
            # the repeats, and every step below writes a cell's repeats the same value).
            touched = cells
            empty = count[touched] == 0
            old_low = np.where(empty, np.inf, low[touched])
            old_high = np.where(empty, -np.inf, high[touched])
            total[touched[empty]] = -0.0
            low[touched] = np.inf
            high[touched] = -np.inf
            np.add.at(count, cells, 1)
            with np.errstate(over="ignore"):  # a sum beyond a float's range is inf, as in Python, not a warning
                np.add.at(total, cells, column)
            np.minimum.at(low, cells[::-1], column[::-1])
            np.maximum.at(high, cells[::-1], column[::-1])
            low[touched] = np.minimum(low[touched], old_low)
            high[touched] = np.maximum(high[touched], old_high)
        del marker, count, total, low, high  # the arrays may grow again once no view holds them
        instance.dirty.update(row_slots.tolist())


def _not_replayed(slots: np.ndarray, offsets: np.ndarray, marker: np.ndarray) -> np.ndarray:
    """Which rows fold, row by row as fold_measures' callers decide: those above their key's marker,
    which each folded row raises. For batches whose offsets do not rise (a test's replays)."""
    running: dict[int, int] = {}
    kept = np.zeros(len(slots), dtype=bool)
    for row, (slot, offset) in enumerate(zip(slots.tolist(), offsets.tolist(), strict=True)):
        if offset > running.get(slot, int(marker[slot])):
            kept[row] = True
            running[slot] = offset
    return kept


def fold_judged(
    partition: int,
    records: Iterable[RawRecord],
    partials: PartitionPartials,
    judge: SpecJudge,
    families_of: Mapping[str, Sequence[Family]],
    frontier_ms: int | None,
    limits: Limits,
    outcome: BatchOutcome,
) -> None:
    """fold_records for the events of a spec (aggregations/judge.py): each record judged once, archived
    (RawColumns, the original bytes) unless its document or time is bad, then, for each aggregation
    that counts it, folded into every window of each of its families (`families_of`: aggregation name
    -> families), with fold_measures' rule and the same markers, close rule and late records as
    fold_records; the fold itself over the batch's columns (_fold_rows), not per record. A record
    that an aggregation rejects is one dead letter (the reasons of every aggregation that rejects it,
    in the spec's order), and still counts in the others; a record whose time or document is bad is a
    dead letter for all."""
    dead_letters, late = outcome.dead_letters, outcome.late
    archived = outcome.columns.get(partition)
    if archived is None:
        archived = outcome.columns[partition] = RawColumns(partition)
    assert isinstance(archived, RawColumns)
    max_event_ms = outcome.max_event_ms.get(partition, NO_EVENT_MS)
    # Per aggregation: its families, the slot of event time that decides their windows (as in
    # fold_records), its rows, and per slot the instances it folds into and the windows it missed,
    # looked up once per batch, not per record and family.
    plans: list[tuple[Sequence[Family], int, _Rows, dict[int, _WindowsAt]]] = []
    for aggregation in judge.spec.aggregations:
        family_list = families_of.get(aggregation.name, ())
        plans.append((family_list, reduce(gcd, (family.step_ms for family in family_list), 0) or 1,
                      _Rows(len(aggregation.measures)), {}))
    max_bytes, min_ms = limits.max_event_bytes, limits.min_event_ms
    for record in records:
        offset, written_ms = record.offset, record.timestamp
        raw = record.value or b""
        judged = judge.judge(raw, max_bytes=max_bytes, min_event_ms=min_ms,
                             max_event_ms=limits.latest_event_ms(written_ms))
        if isinstance(judged, Rejection):
            dead_letters.append(DeadLetter(Record(partition, offset, raw, written_ms), judged))
            continue
        event_ms = judged.event_ms
        archived.append(offset, event_ms, raw)  # every record with a time: the batch layer judges it again
        if event_ms > max_event_ms:
            max_event_ms = event_ms
        rejections: list[Rejection] = []
        missed: list[tuple[str, int]] = []
        for (family_list, slot_ms, rows, windows_of), result in zip(plans, judged.results, strict=True):
            if result is None:
                continue
            if isinstance(result, Rejection):
                rejections.append(result)
                continue
            time_slot = event_ms - event_ms % slot_ms
            at = windows_of.get(time_slot)
            if at is None:
                opened, closed = windows_at(family_list, time_slot, frontier_ms)
                measures_of = {family.name: family.measures for family in family_list}
                at = windows_of[time_slot] = (
                    [partials.instance(group[0], group[1], measures_of[group[0]]) for group in opened], closed)
            if at[1]:
                missed += at[1]
            if at[0]:
                rows.add(key_text(result.key), offset, time_slot, result.measures)
        if rejections:
            first = rejections[0]
            detail = first.detail if len(rejections) == 1 else "; ".join(f"{r.reason}: {r.detail}" for r in rejections)
            dead_letters.append(DeadLetter(Record(partition, offset, raw, written_ms), reject(first.reason, detail)))
        if missed:
            late.append(LateEvent(Record(partition, offset, raw, written_ms), None, tuple(missed)))
    if max_event_ms != NO_EVENT_MS:
        outcome.max_event_ms[partition] = max_event_ms
    for (_families, _slot_ms, rows, windows_of) in plans:
        if rows.codes:
            _fold_rows(rows, {slot: at[0] for slot, at in windows_of.items() if at[0]})
