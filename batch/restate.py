"""Restating the speed layer's closed windows from the raw archive. Pure functions.

A window belongs to the hour of its start (as its object does, sinks/lake.aggregate_key). The
windows starting in hour H are recomputed together from the raw files of every hour they span,
[H, span_end(H)), once all of those hours are sealed (batch/job.py). So the hours a run considers
are those holding a window that overlaps an hour with raw files (hours_to_restate), not the hours
with raw files: a window starting at 21:59:30 is stored under hour 21 even when only 22:00's folder
has events.

Same arithmetic as the speed layer, so that a window without late events gives back its exported
row bit for bit: window starts from tables/windows.window_starts; per input partition the values in
offset order, the running sum started with the first value (tables/partials.fold_records); the
partitions merged in ascending order by tables/totals.combine. A restated row is that fold over
every archived event of the window, late ones included.

Restated row: where the recomputed (count, sum, min, max) differ from the stored row, the row is
replaced with `revision` + 1, and `late_count` = its count minus what the speed layer had counted
(the stored row's count minus its late_count). A window the speed layer never wrote (every event of
its type was late, or the window was added to WINDOWS later) gets revision 1 and late_count = count.
A stored row the archive has fewer events for than the speed layer counted is never replaced: the
archive, not the row, is then incomplete, and the job reports it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from batch.periods import hour_of
from formats.lake import HOUR_MS
from formats.partials import PartialKey
from formats.rows import WindowRow
from tables.partials import fold_value, new_partial
from tables.totals import combine
from tables.windows import WindowSpec, window_starts

__all__ = ["Change", "Comparison", "compare", "hours_to_restate", "place", "recompute", "span_end_ms",
           "span_listing", "starts_in_hour", "windows_overlap", "windows_text"]

# (partition, offset, event_type, event_ms, value): what the fold reads of a raw event.
RawEvent = tuple[int, int, str, int, float]


def starts_in_hour(spec: WindowSpec, hour_ms: int) -> range:
    """The starts of `spec`'s windows in [hour_ms, hour_ms + 1 h)."""
    first = -(-hour_ms // spec.step_ms) * spec.step_ms
    return range(first, hour_ms + HOUR_MS, spec.step_ms)


def span_end_ms(windows: Sequence[WindowSpec], hour_ms: int) -> int | None:
    """The end of the last window starting in the hour (events up to it are read); None if none starts."""
    ends = [starts[-1] + spec.size_ms for spec in windows if (starts := starts_in_hour(spec, hour_ms))]
    return max(ends) if ends else None


def span_listing(hours: Mapping[int, Mapping[str, str]], hour_ms: int, end_ms: int) -> dict[str, str]:
    """The raw objects (key -> ETag) of every hour of the span [hour_ms, end_ms)."""
    return {key: etag for hour in range(hour_ms, hour_of(end_ms - 1) + HOUR_MS, HOUR_MS)
            for key, etag in hours.get(hour, {}).items()}


def windows_text(windows: Sequence[WindowSpec]) -> list[str]:
    """The window specs as a restatement manifest lists them, name:size_ms:step_ms."""
    return [f"{spec.name}:{spec.size_ms}:{spec.step_ms}" for spec in windows]


def windows_overlap(windows: Sequence[WindowSpec], hour_ms: int, from_ms: int | None, to_ms: int | None) -> bool:
    """Whether a window starting in the hour overlaps [from_ms, to_ms) (None: unbounded)."""
    for spec in windows:
        starts = starts_in_hour(spec, hour_ms)
        first = starts.start  # the first start s of the hour with s + size > from_ms
        if from_ms is not None:
            first = max(first, -(-(from_ms - spec.size_ms + 1) // spec.step_ms) * spec.step_ms)
        if first < starts.stop and (to_ms is None or first < to_ms):
            return True
    return False


def hours_to_restate(windows: Sequence[WindowSpec], raw_hours: Iterable[int], from_ms: int | None = None,
                     to_ms: int | None = None) -> list[int]:
    """The hours whose windows a run considers restating, sorted: every hour holding a window that
    overlaps an hour with raw files, whether or not it has raw files of its own; for a backfill, only
    those whose windows also overlap an hour of [from_ms, to_ms) (the hours it covers)."""
    if not windows:
        return []
    longest_ms = max(spec.size_ms for spec in windows)
    low = None if from_ms is None else hour_of(from_ms)
    high = None if to_ms is None else hour_of(to_ms - 1) + HOUR_MS
    found: set[int] = set()
    for raw in set(raw_hours):
        # A window of hour h overlapping [raw, raw + 1 h) starts after raw - longest, so h >= hour_of(that).
        for hour in range(hour_of(raw - longest_ms), raw + HOUR_MS, HOUR_MS):
            if (hour not in found and windows_overlap(windows, hour, raw, raw + HOUR_MS)
                    and windows_overlap(windows, hour, low, high)):
                found.add(hour)
    return sorted(found)


def recompute(windows: Sequence[WindowSpec], hour_ms: int, events: Iterable[RawEvent]) -> dict[PartialKey, WindowRow]:
    """Every window starting in the hour, from `events` sorted by (partition, offset)."""
    parts: dict[PartialKey, dict[int, list[float]]] = {}
    hour_end_ms = hour_ms + HOUR_MS
    for partition, offset, event_type, event_ms, value in events:
        for spec in windows:
            for start_ms in window_starts(spec, event_ms):
                if not hour_ms <= start_ms < hour_end_ms:
                    continue
                by_partition = parts.setdefault(PartialKey(spec.name, start_ms, event_type), {})
                current = by_partition.get(partition)
                if current is None:
                    by_partition[partition] = new_partial(value, offset)
                else:
                    fold_value(current, value, offset)
    size_ms = {spec.name: spec.size_ms for spec in windows}
    rows = {}
    for key, by_partition in parts.items():
        totals = combine(by_partition)
        rows[key] = WindowRow(key.window, key.start_ms, key.start_ms + size_ms[key.window], key.event_type,
                              totals.count, totals.sum, totals.min, totals.max)
    return rows


@dataclass(frozen=True, slots=True)
class Change:
    row: WindowRow  # the row to store
    previous: WindowRow | None  # the stored row it replaces, None for a new one


@dataclass(slots=True)
class Comparison:
    changes: list[Change]
    short: list[tuple[WindowRow, WindowRow]]  # (stored, recomputed): the archive has fewer events
    missing: list[WindowRow]  # stored rows the archive has no event for


def _same(a: WindowRow, b: WindowRow) -> bool:
    return (a.window_end_ms, a.count, a.sum, a.min, a.max) == (b.window_end_ms, b.count, b.sum, b.min, b.max)


def key_of(row: WindowRow) -> PartialKey:
    return PartialKey(row.window, row.window_start_ms, row.event_type)


def compare(recomputed: Mapping[PartialKey, WindowRow], stored: Mapping[PartialKey, WindowRow]) -> Comparison:
    """What to rewrite: rows whose values differ, and rows that do not exist yet, in key order."""
    result = Comparison([], [], [])
    for key in sorted(recomputed):
        new, old = recomputed[key], stored.get(key)
        if old is None:
            result.changes.append(Change(new._replace(revision=1, late_count=new.count), None))
        elif _same(old, new):
            continue
        elif new.count < old.count - old.late_count:
            result.short.append((old, new))
        else:
            speed_count = old.count - old.late_count
            result.changes.append(Change(new._replace(revision=old.revision + 1, late_count=new.count - speed_count),
                                         old))
    result.missing = [stored[key] for key in sorted(stored) if key not in recomputed]
    return result


def place(changes: Iterable[Change], objects: Mapping[str, Sequence[WindowRow]],
          home: Callable[[PartialKey], str]) -> dict[str, list[WindowRow]]:
    """The objects to write whole, with their new rows: a changed row stays in the object that holds it;
    a new row goes to `home(key)` (the object of the stage-2 partition its key routes to), so that each
    (window, window_start, event_type) stays in exactly one object."""
    holder = {key_of(row): object_key for object_key, rows in sorted(objects.items()) for row in rows}
    written: dict[str, list[WindowRow]] = {}
    for change in changes:
        key = key_of(change.row)
        target = holder.get(key) or home(key)
        holder[key] = target
        rows = written.setdefault(target, list(objects.get(target, ())))
        rows[:] = [row for row in rows if key_of(row) != key] + [change.row]
    return written
