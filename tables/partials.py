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
from typing import NamedTuple

from events import Event, Rejection, decode_event
from tables.windows import WindowSpec, closed_upto_ms, is_closed, window_sizes

# Partial value layout, a list so that it serializes compactly to the changelog:
COUNT, SUM, MIN, MAX, MARKER = range(5)
NONE_CLOSED = -(2**63)  # no window closed yet (no frontier): below every start


class PartialKey(NamedTuple):
    window: str
    start_ms: int
    event_type: str


class Record(NamedTuple):
    partition: int
    offset: int
    raw: bytes
    written_ms: int = -1  # the Kafka record's timestamp (-1: none)


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
    valid: list[tuple[Record, Event]] = field(default_factory=list)
    dirty: dict[int, set[PartialKey]] = field(default_factory=dict)  # partition -> changed keys
    max_event_ms: dict[int, int] = field(default_factory=dict)  # partition -> highest valid event time


class PartitionPartials:
    """The open partial aggregates of one input partition."""

    __slots__ = ("partition", "values")

    def __init__(self, partition: int, values: dict[PartialKey, list[float]] | None = None) -> None:
        self.partition = partition
        self.values: dict[PartialKey, list[float]] = values if values is not None else {}

    def pop_closed(self, windows: Sequence[WindowSpec], frontier_ms: int) -> list[tuple[PartialKey, list[float]]]:
        """Remove and return the partials of (configured) windows the frontier has closed."""
        size_ms = window_sizes(tuple(windows))
        closed = [(key, value) for key, value in self.values.items()
                  if key.window in size_ms and is_closed(key.start_ms, size_ms[key.window], frontier_ms)]
        for key, _ in closed:
            del self.values[key]
        return closed


def fold_batch(
    records: Iterable[Record],
    partitions: dict[int, PartitionPartials],
    windows: Sequence[WindowSpec],
    frontiers_ms: Mapping[int, int | None],
    limits: Limits,
) -> BatchOutcome:
    """Decode, validate and fold records into their partitions' partials (mutated in place).

    The hot path of the pipeline: plain tuples and inlined window arithmetic, so that
    no object is created per record beyond the decoded Event (keys are looked up as
    plain tuples, which equal and hash like PartialKey).
    """
    outcome = BatchOutcome()
    dead_letters, late, valid = outcome.dead_letters, outcome.late, outcome.valid
    max_event_ms = outcome.max_event_ms
    all_dirty = outcome.dirty
    specs = [(spec.name, spec.size_ms, spec.step_ms) for spec in windows]
    max_bytes, min_ms, skew_ms, now_ms = limits.max_event_bytes, limits.min_event_ms, limits.max_clock_skew_ms, \
        limits.now_ms
    # Per partition and batch: each window with the latest start the frontier has closed (NONE_CLOSED
    # if none), so the close rule is evaluated once per window, not per record.
    windows_by_partition: dict[int, list[tuple[str, int, int, int]]] = {}
    for record in records:
        partition, offset, raw, written_ms = record
        decoded = decode_event(raw, max_bytes=max_bytes, min_event_ms=min_ms,
                               max_event_ms=(written_ms if written_ms >= 0 else now_ms) + skew_ms)
        if isinstance(decoded, Rejection):
            dead_letters.append(DeadLetter(record, decoded))
            continue
        valid.append((record, decoded))
        event_ms, value, event_type = decoded.event_ms, decoded.value, decoded.event_type
        if event_ms > max_event_ms.get(partition, event_ms - 1):
            max_event_ms[partition] = event_ms
        partition_windows = windows_by_partition.get(partition)
        if partition_windows is None:
            frontier_ms = frontiers_ms.get(partition)
            partition_windows = windows_by_partition[partition] = [
                (name, size_ms, step_ms, NONE_CLOSED if frontier_ms is None else closed_upto_ms(size_ms, frontier_ms))
                for name, size_ms, step_ms in specs]
        values = partitions[partition].values
        dirty = all_dirty.get(partition)
        if dirty is None:
            dirty = all_dirty[partition] = set()
        missed: list[tuple[str, int]] | None = None
        for name, size_ms, step_ms, last_closed_ms in partition_windows:
            # Starts s with s <= t < s + size, multiples of step (floor, so negatives too),
            # ascending: size is a multiple of step, so there are size/step of them.
            last_ms = event_ms - event_ms % step_ms
            for start_ms in (last_ms,) if size_ms == step_ms else range(last_ms - size_ms + step_ms, last_ms + 1,
                                                                          step_ms):
                if start_ms <= last_closed_ms:
                    if missed is None:
                        missed = []
                    missed.append((name, start_ms))
                    continue
                key = (name, start_ms, event_type)
                current = values.get(key)
                if current is None:
                    key = PartialKey(name, start_ms, event_type)
                    values[key] = [1, value, value, value, offset]
                    dirty.add(key)
                elif offset > current[MARKER]:
                    current[COUNT] += 1
                    current[SUM] += value
                    if value < current[MIN]:
                        current[MIN] = value
                    if value > current[MAX]:
                        current[MAX] = value
                    current[MARKER] = offset
                    dirty.add(key)
                # else: a replayed record this key already holds
        if missed:
            late.append(LateEvent(record, decoded, tuple(missed)))
    for partition, keys in all_dirty.items():
        all_dirty[partition] = {PartialKey(*key) for key in keys}  # per changed key, not per record
    return outcome

