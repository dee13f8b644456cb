"""Restating a spec's closed windows from the raw archive, per aggregation (batch/restating.py is the
article's; the rules are the same, and so is their order of writes: Redis, the window's objects in S3,
then the manifest).

Per hour H and aggregation A (the hours of each aggregation's windows, batch/restate.hours_to_restate):
A's windows starting in H span the raw hours [H, E); once those are sealed and stage 2 has exported
every window of H, the raw files of [H, E) are judged again (batch/judging.py), folded as stage 1
folds a spec's events (tables/partials.new_measures_partial, fold_measures: per input partition in
offset order) and merged as stage 2 merges them (tables/totals.combine_measures, partitions in
ascending order), so a window without late events gives back its exported row bit for bit.

A restated row replaces the stored one with ``revision`` + 1 where a measure's statistics differ.
A spec's row has no event count of its own (a measure may be left out of an event), so its
``late_count`` counts by its largest measure count: how much that grew over what the speed layer
had (the stored largest count minus its late_count); a row the speed layer never wrote gets revision 1
and late_count = its largest count. A stored row whose largest count the archive cannot reach is
never replaced (the archive is then incomplete; reported).

Each (aggregation, hour) has its manifest (formats/lake.spec_manifest_key, period "restated"), with the
aggregation's window specs and definition: a changed aggregation or window is restated again. An
hour's raw files are read and judged once per run, for every aggregation.

Blocking (S3 and Redis calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aggregations.judge import Counted
from aggregations.spec import Aggregation, Spec
from batch.inputs import PeriodInputs
from batch.judging import JudgedEvents, judge_inputs, spec_inputs
from batch.manifest import read_manifest
from batch.periods import Period, hour_of
from batch.report import BatchLake, RunReport
from batch.restate import hours_to_restate, span_end_ms, span_listing, windows_text
from formats.aggregates import (
    AggregateLayout,
    AggregateRow,
    MeasureStats,
    aggregate_rows_to_parquet,
    parquet_to_aggregate_rows,
)
from formats.batch import JSON_CONTENT_TYPE, RestateManifest, restate_manifest_from_json, restate_manifest_to_json
from formats.events import iso_utc
from formats.lake import (
    HOUR_MS,
    parse_spec_aggregate_key,
    spec_aggregate_hour_prefix,
    spec_aggregate_key,
    spec_manifest_key,
)
from formats.parquet import PARQUET_CONTENT_TYPE
from formats.partials import key_partition, key_text
from sinks.lake import get_objects
from tables.partials import fold_measures, new_measures_partial
from tables.totals import combine_measures
from tables.windows import WindowSpec, window_starts

__all__ = ["AggregateChange", "definition", "recompute_aggregation", "restate_spec_hours", "spec_hours_to_restate"]


RowKey = tuple[str, int, tuple[Any, ...]]  # window, window start, key parts


class AggregateWriter(Protocol):
    """Redis as a spec's restatement uses it (sinks.redis_store.RedisWindowStore)."""

    def write_aggregates(self, rows: Sequence[AggregateRow], layout: AggregateLayout, output: str) -> None: ...


class Exported(Protocol):
    def exported(self, hour_ms: int, end_ms: int) -> bool: ...


class SpecRestatement(Protocol):
    """What a spec's restatement needs of batch/restating.Restatement."""

    windows: tuple[WindowSpec, ...]
    stage2_partitions: int
    stage2: Exported
    redis: Any  # an AggregateWriter, or None


def definition(spec: Spec, aggregation: Aggregation) -> str:
    """The fingerprint of what an aggregation's rows are computed by: the spec's time and the
    aggregation's key, measures, filters and distinct fields (not its windows, which the restatement's
    manifest lists, nor its Redis output)."""
    text = repr((spec.time, aggregation.key, aggregation.missing_key, aggregation.measures,
                 aggregation.missing_measure, aggregation.where, aggregation.distinct))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def windows_of(aggregation: Aggregation, windows: Sequence[WindowSpec]) -> tuple[WindowSpec, ...]:
    return tuple(spec for spec in windows if spec.name in aggregation.windows)


def spec_hours_to_restate(spec: Spec, windows: Sequence[WindowSpec], raw_hours: Iterable[int],
                          from_ms: int | None = None, to_ms: int | None = None) -> list[int]:
    """Every hour some aggregation's windows are considered for restatement in (hours_to_restate's rule)."""
    hours = list(raw_hours)
    return sorted({hour for aggregation in spec.aggregations
                   for hour in hours_to_restate(windows_of(aggregation, windows), hours, from_ms, to_ms)})


def recompute_aggregation(aggregation: Aggregation, windows: Sequence[WindowSpec], hour_ms: int,
                          events: JudgedEvents) -> dict[RowKey, AggregateRow]:
    """Every window of the aggregation starting in the hour, from its counted events (any order: they
    are folded in (partition, offset) order)."""
    parts: dict[RowKey, dict[int, list[float]]] = {}
    hour_end_ms = hour_ms + HOUR_MS
    order = sorted(range(len(events)), key=lambda i: (events.partitions[i], events.offsets[i]))
    for i in order:
        partition, offset, event_ms = events.partitions[i], events.offsets[i], events.event_ms[i]
        counted: Counted = events.counted[i]
        for spec in windows:
            for start_ms in window_starts(spec, event_ms):
                if not hour_ms <= start_ms < hour_end_ms:
                    continue
                by_partition = parts.setdefault((spec.name, start_ms, counted.key), {})
                current = by_partition.get(partition)
                if current is None:
                    by_partition[partition] = new_measures_partial(counted.measures, offset)
                else:
                    fold_measures(current, counted.measures, offset)
    size_ms = {spec.name: spec.size_ms for spec in windows}
    measures = len(aggregation.measures)
    return {key: AggregateRow(aggregation.name, key[0], key[1], key[1] + size_ms[key[0]], key[2],
                              tuple(None if t is None else MeasureStats(*t)
                                    for t in combine_measures(by_partition, measures)))
            for key, by_partition in parts.items()}


def _largest(row: AggregateRow) -> int:
    return max((stats.count for stats in row.measures if stats is not None), default=0)


@dataclass(frozen=True, slots=True)
class AggregateChange:
    row: AggregateRow  # the row to store
    previous: AggregateRow | None  # the stored row it replaces, None for a new one


def _key(row: AggregateRow) -> RowKey:
    return row.window, row.window_start_ms, row.key


def _order(key: RowKey) -> tuple[Any, ...]:
    return key[1], key[0], tuple((part is not None, part) for part in key[2])


def compare_aggregates(recomputed: Mapping[RowKey, AggregateRow], stored: Mapping[RowKey, AggregateRow]
                       ) -> tuple[list[AggregateChange], list[tuple[AggregateRow, AggregateRow]], list[AggregateRow]]:
    """(changes, short: (stored, recomputed) the archive cannot account for, missing: stored rows without
    an event in the archive), each in key order."""
    changes, short = [], []
    for key in sorted(recomputed, key=_order):
        new, old = recomputed[key], stored.get(key)
        if old is None:
            changes.append(AggregateChange(new._replace(revision=1, late_count=_largest(new)), None))
            continue
        if (old.window_end_ms, old.measures) == (new.window_end_ms, new.measures):
            continue
        speed = _largest(old) - old.late_count
        if _largest(new) < speed:
            short.append((old, new))
            continue
        changes.append(AggregateChange(new._replace(revision=old.revision + 1, late_count=_largest(new) - speed), old))
    missing = [stored[key] for key in sorted(stored, key=_order) if key not in recomputed]
    return changes, short, missing


class _JudgedHours:
    """Each raw hour's files judged once per run (the hours of a span are shared by several hours and
    aggregations); hours before the one being restated are let go."""

    def __init__(self, lake: BatchLake, spec: Spec, hours: Mapping[int, Mapping[str, str]]) -> None:
        self.lake, self.spec, self.hours = lake, spec, hours
        self._cache: dict[int, tuple[PeriodInputs, list[JudgedEvents]]] = {}

    def release_before(self, hour_ms: int) -> None:
        for hour in [h for h in self._cache if h < hour_ms]:
            del self._cache[hour]

    def span(self, first_ms: int, end_ms: int) -> tuple[list[PeriodInputs], list[JudgedEvents]]:
        """The inputs of the raw hours [first_ms, end_ms), and per aggregation its counted events."""
        inputs, merged = [], [JudgedEvents() for _ in self.spec.aggregations]
        for hour in range(first_ms, hour_of(end_ms - 1) + HOUR_MS, HOUR_MS):
            if hour not in self._cache:
                hour_inputs = spec_inputs(self.lake.prefix, self.hours.get(hour, {}), self.lake.get_bytes)
                self._cache[hour] = (hour_inputs, judge_inputs(hour_inputs, self.spec))
            hour_inputs, judged = self._cache[hour]
            inputs.append(hour_inputs)
            for into, events in zip(merged, judged, strict=True):
                into.partitions += events.partitions
                into.offsets += events.offsets
                into.event_ms += events.event_ms
                into.counted += events.counted
        return inputs, merged


def restate_spec_hours(lake: BatchLake, spec: Spec, hours: Mapping[int, Mapping[str, str]], selected: Sequence[int],
                       sealed_until_ms: int | None, backfill: bool, config: SpecRestatement,
                       say: Callable[[str], None], report: RunReport, step: Callable[[], None] = lambda: None) -> None:
    """`selected`: the hours to consider (spec_hours_to_restate); `step` is called once per hour."""
    manifests = lake.list_etags(f"{lake.prefix}batch/manifests/aggregations/")
    judged = _JudgedHours(lake, spec, hours)
    for hour in selected:
        judged.release_before(hour)
        for index, aggregation in enumerate(spec.aggregations):
            windows = windows_of(aggregation, config.windows)
            end_ms = span_end_ms(windows, hour)
            if end_ms is None:
                continue
            _restate_if_needed(lake, spec, index, windows, hour, end_ms, hours, manifests, judged, sealed_until_ms,
                               backfill, config, say, report)
        step()


def _restate_if_needed(lake: BatchLake, spec: Spec, index: int, windows: tuple[WindowSpec, ...], hour: int,
                       end_ms: int, hours: Mapping[int, Mapping[str, str]], manifests: Mapping[str, str],
                       judged: _JudgedHours, sealed_until_ms: int | None, backfill: bool, config: SpecRestatement,
                       say: Callable[[str], None], report: RunReport) -> None:
    aggregation = spec.aggregations[index]
    label = f"{Period.hourly(hour).label()} {aggregation.name}"
    key = spec_manifest_key(lake.prefix, aggregation.name, "restated", hour)
    old = (read_manifest(lake, key, restate_manifest_from_json, say, "its hour is restated again")
           if key in manifests else None)
    if old is None and (sealed_until_ms is None or end_ms > sealed_until_ms):
        report.restate_not_sealed += 1
        return
    listing = span_listing(hours, hour, end_ms)
    specs_text = windows_text(windows)
    fingerprint = definition(spec, aggregation)
    if (old is not None and dict(old.inputs) == listing and not backfill and list(old.windows) == specs_text
            and old.definition == fingerprint):
        report.restate_up_to_date += 1
        return
    if not config.stage2.exported(hour, end_ms):
        say(f"{label}: windows not all exported by stage 2 yet: restated by a later run")
        report.restate_waiting += 1
        return
    inputs, events = judged.span(hour, end_ms)
    skipped = {k: why for i in inputs for k, why in i.skipped.items()}
    for object_key, why in sorted(skipped.items()):
        if object_key not in report.skipped:
            say(f"warning: {label} (restating): skipped s3://{lake.bucket}/{object_key}: {why}")
    report.skipped.update(skipped)
    layout = aggregation.layout()
    recomputed = recompute_aggregation(aggregation, windows, hour, events[index])
    objects = _stored(lake, aggregation, windows, hour, layout, say)
    stored = {_key(row): row for rows in objects.values() for row in rows}
    changes, short, missing = compare_aggregates(recomputed, stored)
    for old_row, new_row in short:
        say(f"warning: {label}: {old_row.window} {iso_utc(old_row.window_start_ms)} {old_row.key!r}: the raw archive "
            f"has {_largest(new_row)} values, the speed layer counted {_largest(old_row) - old_row.late_count}: "
            "row left as it is")
    if missing:
        say(f"warning: {label}: {len(missing)} stored rows have no event in the raw archive: left as they are")
    report.restate_problems += len(short) + len(missing)
    by_window: dict[tuple[str, int], list[AggregateChange]] = defaultdict(list)
    for change in changes:
        by_window[(change.row.window, change.row.window_start_ms)].append(change)
    redis = None if aggregation.redis == "off" else config.redis
    for (window, start_ms), window_changes in sorted(by_window.items(), key=lambda item: (item[0][1], item[0][0])):
        if redis is not None:
            redis.write_aggregates([c.row for c in window_changes], layout, aggregation.redis)  # before S3
        written = _place(window_changes, objects, lambda row: spec_aggregate_key(
            lake.prefix, aggregation.name, row.window, row.window_start_ms,
            key_partition(aggregation.name, key_text(row.key), config.stage2_partitions)))
        for object_key, rows in sorted(written.items()):
            lake.put_bytes(object_key, aggregate_rows_to_parquet(rows, layout), PARQUET_CONTENT_TYPE)
            objects[object_key] = rows
        report.objects_written += len(written)
        report.windows_restated += 1
        report.rows_restated += len(window_changes)
        say(f"restated {aggregation.name} {window} {iso_utc(start_ms)}: {len(window_changes)} rows")
    if backfill and redis is not None:
        final = sorted((row for rows in objects.values() for row in rows), key=lambda r: _order(_key(r)))
        redis.write_aggregates(final, layout, aggregation.redis)  # in script calls of ROWS_PER_SCRIPT rows
        report.redis_rows_written += len(final)
    manifest = RestateManifest(start_ms=hour, end_ms=end_ms, windows=specs_text, inputs=listing,
                               skipped=skipped, events=sum(i.events for i in inputs), restated=len(changes),
                               definition=fingerprint)
    lake.put_bytes(key, restate_manifest_to_json(manifest), JSON_CONTENT_TYPE)
    report.objects_written += 1
    report.restated_hours += 1
    say(f"{label} restated: {len(changes)} rows of {len(by_window)} windows from {len(events[index])} counted events")


def _stored(lake: BatchLake, aggregation: Aggregation, windows: Sequence[WindowSpec], hour: int,
            layout: AggregateLayout, say: Callable[[str], None]) -> dict[str, list[AggregateRow]]:
    """Every window object of the aggregation's windows starting in the hour, object key -> rows."""
    keys = []
    for spec in windows:
        for key in sorted(lake.list_etags(spec_aggregate_hour_prefix(lake.prefix, aggregation.name, spec.name, hour))):
            name = parse_spec_aggregate_key(lake.prefix, aggregation.name, key)
            if name is None or name.window != spec.name:
                say(f"warning: skipped s3://{lake.bucket}/{key}: not a window object name")
                continue
            keys.append(key)
    bodies = get_objects(lake, keys)
    return {key: parquet_to_aggregate_rows(body, aggregation.name, layout)
            for key, body in zip(keys, bodies, strict=True)}


def _place(changes: Iterable[AggregateChange], objects: Mapping[str, Sequence[AggregateRow]],
           home: Callable[[AggregateRow], str]) -> dict[str, list[AggregateRow]]:
    """The objects to write whole (batch/restate.place's rule): a changed row stays in the object that
    holds it; a new row goes to the object of the stage-2 partition its key routes to."""
    holder = {_key(row): object_key for object_key, rows in sorted(objects.items()) for row in rows}
    written: dict[str, list[AggregateRow]] = {}
    for change in changes:
        key = _key(change.row)
        target = holder.get(key) or home(change.row)
        holder[key] = target
        rows = written.setdefault(target, list(objects.get(target, ())))
        rows[:] = [row for row in rows if _key(row) != key] + [change.row]
    return written
