"""Stage 1: per input partition, validate records and pre-aggregate them per window.

Pure logic over plain data (no faust, no I/O): the ingest agent feeds it batches of
(partition, offset, raw bytes) and persists what it returns.

Exactly once under replay. Faust commits offsets at least once, so after a crash the
records after the last commit are processed again. Each partial aggregate carries the
highest input offset folded into it (its *marker*), and stored with it in one table
record; a replayed record whose offset is not above the marker of a key is already in
that key and is skipped. Records of one partition arrive in offset order, so this is
exact per key.

Late records. A partition's *frontier* is the low watermark over all input partitions
that its owner had announced for it when the batch began (see agents/ingest.py): every
window ending at or before it is closed for that partition, its final partial already
sent. A record in such a window is late for it: it goes to the late topic and still
counts in its other, open windows. Stage 1 only folds records it has not processed
before (it resumes from its own stored position), so a record is never judged twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import reduce
from itertools import groupby
from math import gcd
from operator import attrgetter
from typing import NamedTuple, Protocol

from events import Event, EventColumns, Rejection, decode_common, decode_event
from tables.windows import WindowSpec, closed_upto_ms, is_closed, window_sizes

# Partial value layout, a list so that it serializes compactly to the changelog:
COUNT, SUM, MIN, MAX, MARKER = range(5)
NONE_CLOSED = -(2**63)  # no window closed yet (no frontier): below every start


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


class PartialKey(NamedTuple):
    window: str
    start_ms: int
    event_type: str


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
    event: Event
    closed: tuple[tuple[str, int], ...]  # (window, start_ms) it missed


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
    valid: list[tuple[Record, Event]] = field(default_factory=list)  # fold_batch's only
    columns: dict[int, EventColumns] = field(default_factory=dict)  # partition -> valid events, for the archive
    dirty: dict[int, set[PartialKey]] = field(default_factory=dict)  # partition -> changed keys
    max_event_ms: dict[int, int] = field(default_factory=dict)  # partition -> highest valid event time


class PartitionPartials:
    """The open partial aggregates of one input partition, and their keys by window instance
    (window, start), so that closing a window does not scan every key."""

    __slots__ = ("groups", "partition", "values")

    def __init__(self, partition: int, values: dict[PartialKey, list[float]] | None = None) -> None:
        self.partition = partition
        self.values: dict[PartialKey, list[float]] = values if values is not None else {}
        self.groups: dict[tuple[str, int], list[PartialKey]] = {}
        for key in self.values:
            self.groups.setdefault((key.window, key.start_ms), []).append(key)

    def add(self, key: PartialKey, partial: list[float]) -> None:
        """A new key (the fold's way in: it must not be present)."""
        self.values[key] = partial
        group = self.groups.get((key.window, key.start_ms))
        if group is None:
            self.groups[(key.window, key.start_ms)] = [key]
        else:
            group.append(key)

    def drop_windows(self, windows: set[str]) -> list[PartialKey]:
        """Remove every key of these windows; their keys."""
        dropped = [key for (window, _), keys in self.groups.items() if window in windows for key in keys]
        self._remove([group for group in self.groups if group[0] in windows])
        return dropped

    def pop_closed(self, windows: Sequence[WindowSpec], frontier_ms: int) -> list[tuple[PartialKey, list[float]]]:
        """Remove and return the partials of (configured) windows the frontier has closed."""
        size_ms = window_sizes(tuple(windows))
        closed_groups = [(window, start) for window, start in self.groups
                         if window in size_ms and is_closed(start, size_ms[window], frontier_ms)]
        closed = [(key, self.values[key]) for group in closed_groups for key in self.groups[group]]
        self._remove(closed_groups)
        return closed

    def _remove(self, groups: list[tuple[str, int]]) -> None:
        values = self.values
        for group in groups:
            for key in self.groups.pop(group):
                del values[key]


class RawRecord(Protocol):
    """What folding reads of a record: aiokafka's ConsumerRecord, or a Record."""

    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def timestamp(self) -> int: ...


def fold_batch(
    records: Iterable[Record],
    partitions: dict[int, PartitionPartials],
    windows: Sequence[WindowSpec],
    frontiers_ms: Mapping[int, int | None],
    limits: Limits,
) -> BatchOutcome:
    """fold_records for Records of any partitions, in their order; also lists the valid (Record, Event)."""
    outcome = BatchOutcome()
    for partition, run in groupby(records, key=attrgetter("partition")):
        batch = list(run)
        fold_records(partition, batch, partitions[partition], windows, frontiers_ms.get(partition), limits, outcome)
        for record in batch:
            decoded = limits.decode(record)
            if isinstance(decoded, Event):
                outcome.valid.append((record, decoded))
    return outcome


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
    in place); what else they give is added to ``outcome``: dead letters, late records, the valid
    events' columns (for the raw archive), the changed keys and the highest event time.

    The hot path of the pipeline. No object is made per valid record beyond what msgspec decodes:
    a record's window keys depend only on its event type and on its event time's slot of the
    windows' common step (every start it falls in, and whether the frontier closed it, is the
    same for the whole slot), so the partials a slot and type folds into are looked up once per
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
    # Each window with the latest start the frontier has closed (NONE_CLOSED if none): the close
    # rule is evaluated once per window and batch, not per record.
    specs = [(spec.name, spec.size_ms, spec.step_ms,
              NONE_CLOSED if frontier_ms is None else closed_upto_ms(spec.size_ms, frontier_ms)) for spec in windows]
    slots: dict[tuple[str, int], _Slot] = {}
    max_bytes, min_ms, skew_ms, now_ms = limits.max_event_bytes, limits.min_event_ms, limits.max_clock_skew_ms, \
        limits.now_ms
    max_event_ms = outcome.max_event_ms.get(partition, NONE_CLOSED)
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
        slot_key = (event_type, event_ms - event_ms % slot_ms)
        slot = slots.get(slot_key)
        if slot is None:
            slot = slots[slot_key] = _open_slot(partials, specs, event_type, event_ms, value, offset)
        else:
            for current in slot.partials:
                if offset > current[MARKER]:  # fold_value, inline
                    current[COUNT] += 1
                    current[SUM] += value
                    if value < current[MIN]:
                        current[MIN] = value
                    if value > current[MAX]:
                        current[MAX] = value
                    current[MARKER] = offset
                # else: a replayed record this key already holds
        if slot.missed:
            late.append(LateEvent(Record(partition, offset, raw, written_ms),
                                  Event(user_id, event_type, event_ms, value), slot.missed))
    if max_event_ms != NONE_CLOSED:
        outcome.max_event_ms[partition] = max_event_ms
    dirty = outcome.dirty.get(partition)
    if dirty is None:
        dirty = outcome.dirty[partition] = set()
    for slot in slots.values():  # per changed key, not per record
        dirty.update(key for key, current, marker in zip(slot.keys, slot.partials, slot.markers, strict=True)
                     if current[MARKER] != marker)
    if not dirty:
        del outcome.dirty[partition]


class _Slot(NamedTuple):
    """The open partials one (event type, slot of event time) folds into, within one batch."""

    keys: list[PartialKey]
    partials: list[list[float]]
    markers: list[float | None]  # each partial's marker when the slot opened (None: created then)
    missed: tuple[tuple[str, int], ...]  # (window, start_ms) the frontier had closed


def _open_slot(partials: PartitionPartials, specs: Sequence[tuple[str, int, int, int]], event_type: str,
               event_ms: int, value: float, offset: int) -> _Slot:
    """The slot of a batch's first record in it, with that record folded in."""
    values = partials.values
    keys: list[PartialKey] = []
    currents: list[list[float]] = []
    markers: list[float | None] = []
    missed = []
    for name, size_ms, step_ms, last_closed_ms in specs:
        # Starts s with s <= t < s + size, multiples of step (floor, so negatives too),
        # ascending: size is a multiple of step, so there are size/step of them.
        last_ms = event_ms - event_ms % step_ms
        for start_ms in range(last_ms - size_ms + step_ms, last_ms + 1, step_ms):
            if start_ms <= last_closed_ms:
                missed.append((name, start_ms))
                continue
            key = _new_key(PartialKey, (name, start_ms, event_type))
            current = values.get(key)
            if current is None:
                current = [1, value, value, value, offset]  # new_partial, inline
                partials.add(key, current)
                marker = None
            else:
                marker = current[MARKER]
                if offset > marker:  # fold_value, inline
                    current[COUNT] += 1
                    current[SUM] += value
                    if value < current[MIN]:
                        current[MIN] = value
                    if value > current[MAX]:
                        current[MAX] = value
                    current[MARKER] = offset
            keys.append(key)
            currents.append(current)
            markers.append(marker)
    return _new_key(_Slot, (keys, currents, markers, tuple(missed)))


# A NamedTuple built without its constructor's argument handling (one per new slot and key: with many
# event types, one per record).
_new_key = tuple.__new__
