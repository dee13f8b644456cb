"""One run's restatement of the speed layer's windows (batch/restate.py says what a restated row is).

Per hour H holding a window over raw data (batch/restate.hours_to_restate; H itself may have no
raw file): the windows starting in H span the raw hours [H, E). They are restated
once every one of those hours is sealed (E at or before the sealing bound; or H restated before)
and stage 2 has exported every window of H (batch/stage2.py), so the job never writes a window
stage 2 is still to write. Like the rollups, an hour is done again only when the raw listing of
[H, E) differs from its manifest, or for a backfill (--from/--to).

Writes, per window with a changed row: Redis first, then the window's objects in S3 (replaced
whole), then, after all windows of the hour, the manifest. A crash leaves S3 rows either old or
restated; the next run compares again, writes Redis and S3 for every row still old, and nothing
for rows already restated (equal values): exact after any crash. A backfill also writes every row
of the hour, from the lake, to Redis (a flushed Redis is repopulated).

Blocking (S3 and Redis calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa

from batch.inputs import RESTATE_INPUT_SCHEMA, PeriodInputs
from batch.manifest import read_manifest
from batch.periods import Period
from batch.report import BatchLake, RunReport
from batch.restate import Change, compare, key_of, place, recompute, span_end_ms, span_listing, windows_text
from formats.batch import JSON_CONTENT_TYPE, RestateManifest, restate_manifest_from_json, restate_manifest_to_json
from formats.events import iso_utc
from formats.lake import aggregate_hour_prefix, aggregate_key, parse_aggregate_key, restate_manifest_key
from formats.parquet import PARQUET_CONTENT_TYPE
from formats.partials import PartialKey, partial_partition
from formats.rows import WindowRow, parquet_to_rows, rows_to_parquet
from sinks.lake import get_objects
from tables.windows import WindowSpec

__all__ = ["Restatement", "WindowWriter", "restate_hours"]


class WindowWriter(Protocol):
    """Redis as restatement uses it (sinks.redis_store.RedisWindowStore)."""

    def write(self, rows: Sequence[WindowRow]) -> None: ...


class Exported(Protocol):
    def exported(self, hour_ms: int, end_ms: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class Restatement:
    """What restating needs beside the lake: the windows, how stage 2 routes keys, its progress, Redis."""

    windows: tuple[WindowSpec, ...]
    stage2_partitions: int
    stage2: Exported
    redis: WindowWriter | None

    def home(self, prefix: str, key: PartialKey) -> str:
        """The object of the stage-2 partition that owns the key (the one that would have written it)."""
        part = partial_partition(key.event_type, self.stage2_partitions)
        return aggregate_key(prefix, key.window, key.start_ms, part)

    def specs_text(self) -> list[str]:
        return windows_text(self.windows)


def restate_hours(lake: BatchLake, hours: Mapping[int, Mapping[str, str]], selected: Sequence[int],
                  sealed_until_ms: int | None, backfill: bool, config: Restatement, say: Callable[[str], None],
                  report: RunReport, step: Callable[[], None] = lambda: None) -> None:
    """`selected`: the hours of window starts to consider (batch/restate.hours_to_restate). `step` is
    called once per hour of `selected`, done or skipped (the run's progress)."""
    manifests = lake.list_etags(f"{lake.prefix}batch/manifests/restated/")
    for hour in selected:
        _restate_if_needed(lake, hours, hour, manifests, sealed_until_ms, backfill, config, say, report)
        step()


def _restate_if_needed(lake: BatchLake, hours: Mapping[int, Mapping[str, str]], hour: int,
                       manifests: Mapping[str, str], sealed_until_ms: int | None, backfill: bool,
                       config: Restatement, say: Callable[[str], None], report: RunReport) -> None:
    end_ms = span_end_ms(config.windows, hour)
    if end_ms is None:
        return
    label = Period.hourly(hour).label()
    key = restate_manifest_key(lake.prefix, hour)
    old = (read_manifest(lake, key, restate_manifest_from_json, say, "its hour is restated again")
           if key in manifests else None)
    if old is None and (sealed_until_ms is None or end_ms > sealed_until_ms):
        report.restate_not_sealed += 1
        return
    listing = span_listing(hours, hour, end_ms)
    if old is not None and dict(old.inputs) == listing and not backfill:
        report.restate_up_to_date += 1
        return
    if not config.stage2.exported(hour, end_ms):
        say(f"{label}: windows not all exported by stage 2 yet: restated by a later run")
        report.restate_waiting += 1
        return
    _restate_hour(lake, hour, end_ms, listing, backfill, config, say, report, label)


def _events(inputs: PeriodInputs) -> list[tuple[int, int, str, int, float]]:
    """The hour span's events in stage 1's order: by partition, then offset."""
    table = pa.Table.from_batches(list(inputs.batches()), schema=RESTATE_INPUT_SCHEMA)
    table = table.sort_by([("partition", "ascending"), ("offset", "ascending")])
    columns = [table.column(name) for name in ("partition", "offset", "event_type")]
    times = table.column("timestamp").cast(pa.int64())
    return list(zip(*(c.to_pylist() for c in columns), times.to_pylist(), table.column("value").to_pylist(),
                    strict=True))


def _stored(lake: BatchLake, hour: int, config: Restatement, say: Callable[[str], None]
            ) -> dict[str, list[WindowRow]]:
    """Every window object of the hour (of configured windows), object key -> rows."""
    keys = []
    for spec in config.windows:
        for key in sorted(lake.list_etags(aggregate_hour_prefix(lake.prefix, spec.name, hour))):
            name = parse_aggregate_key(lake.prefix, key)
            if name is None or name.window != spec.name:
                say(f"warning: skipped s3://{lake.bucket}/{key}: not a window object name")
                continue
            keys.append(key)
    bodies = get_objects(lake, keys)
    return {key: parquet_to_rows(body) for key, body in zip(keys, bodies, strict=True)}


def _restate_hour(lake: BatchLake, hour: int, end_ms: int, listing: Mapping[str, str], backfill: bool,
                  config: Restatement, say: Callable[[str], None], report: RunReport, label: str) -> None:
    inputs = PeriodInputs(lake.prefix, listing, lake.get_bytes, schema=RESTATE_INPUT_SCHEMA)
    recomputed = recompute(config.windows, hour, _events(inputs))
    for key, why in sorted(inputs.skipped.items()):
        if key not in report.skipped:
            say(f"warning: {label} (restating): skipped s3://{lake.bucket}/{key}: {why}")
    report.skipped.update(inputs.skipped)
    objects = _stored(lake, hour, config, say)
    stored = {key_of(row): row for rows in objects.values() for row in rows}
    comparison = compare(recomputed, stored)
    for old, new in comparison.short:
        say(f"warning: {label}: {old.window} {iso_utc(old.window_start_ms)} {old.event_type!r}: the raw archive has "
            f"{new.count} events, the speed layer counted {old.count - old.late_count}: row left as it is")
    if comparison.missing:
        say(f"warning: {label}: {len(comparison.missing)} stored rows have no event in the raw archive: left as they "
            "are")
    report.restate_problems += len(comparison.short) + len(comparison.missing)
    by_window: dict[tuple[str, int], list[Change]] = defaultdict(list)
    for change in comparison.changes:
        by_window[(change.row.window, change.row.window_start_ms)].append(change)
    for (window, start_ms), changes in sorted(by_window.items(), key=lambda item: (item[0][1], item[0][0])):
        if config.redis is not None:
            config.redis.write([change.row for change in changes])  # before S3: see the module's docstring
        written = place(changes, objects, lambda key: config.home(lake.prefix, key))
        for object_key, rows in sorted(written.items()):
            lake.put_bytes(object_key, rows_to_parquet(rows), PARQUET_CONTENT_TYPE)
            objects[object_key] = rows
        report.objects_written += len(written)
        report.windows_restated += 1
        report.rows_restated += len(changes)
        say(f"restated {window} {iso_utc(start_ms)}: " + ", ".join(_describe(change) for change in changes))
    if backfill and config.redis is not None:
        final = sorted((row for rows in objects.values() for row in rows), key=lambda r: (r.window_start_ms,
                                                                                          r.window, r.event_type))
        config.redis.write(final)  # in script calls of ROWS_PER_SCRIPT rows (sinks/redis_store.py)
        report.redis_rows_written += len(final)
    manifest = RestateManifest(start_ms=hour, end_ms=end_ms, windows=config.specs_text(), inputs=dict(listing),
                               skipped=dict(inputs.skipped), events=inputs.events, restated=len(comparison.changes))
    lake.put_bytes(restate_manifest_key(lake.prefix, hour), restate_manifest_to_json(manifest), JSON_CONTENT_TYPE)
    report.objects_written += 1
    report.restated_hours += 1
    say(f"{label} restated: {len(comparison.changes)} rows of {len(by_window)} windows from {inputs.events} events")


def _describe(change: Change) -> str:
    row, old = change.row, change.previous
    before = "new" if old is None else f"{old.count}"
    return f"{row.event_type!r} {before} -> {row.count} (revision {row.revision}, {row.late_count} late)"
