"""Restating the speed layer's closed windows from the raw archive. Pure functions.

A window belongs to the hour of its start (as its object does, sinks/lake.aggregate_key). The
windows starting in hour H are recomputed together from the raw files of every hour they span,
[H, span_end(H)), once all of those hours are sealed (batch/job.py).

Same arithmetic as the speed layer, so that a window without late events gives back its exported
row bit for bit: window starts from tables/windows.window_starts; per input partition the values in
offset order, the running sum started with the first value (tables/partials.fold_batch); the
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

from batch.periods import HOUR_MS
from sinks.rows import WindowRow
from tables.partials import PartialKey, fold_value, new_partial
from tables.totals import combine
from tables.windows import WindowSpec, window_starts

__all__ = ["Change", "Comparison", "compare", "place", "recompute", "span_end_ms", "starts_in_hour"]

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
