"""One run of the batch layer: every sealed period whose inputs changed, hours first, then days;
then, given a Restatement, the windows of every sealed hour whose inputs changed (batch/restating.py):
the hours holding a window over an hour with raw files (batch/restate.hours_to_restate).

Per period: list its raw folders (key -> ETag), compare with its manifest, and if they differ
(or it has none) compute its rollup, write it, and only then write the manifest. A crash at any
point leaves either an old manifest (the period is computed again, its output replaced whole) or
a new one whose output is already in place. Days are computed after their hours, from the raw
files (exact distinct counts and percentiles cannot be merged from hourly rows).

With a spec (AGGREGATIONS), each aggregation has its rollups and manifests (formats/lake.py
spec_rollup_key, spec_manifest_key); a period's raw files are read and judged once for every
aggregation that must be computed (batch/judging.py), and an aggregation whose definition changed
(its manifest's `definition`) is computed again.

Blocking (S3 calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from aggregations.spec import Aggregation, Spec
from batch.inputs import PeriodInputs
from batch.judging import judge_to_tables, spec_inputs
from batch.manifest import read_manifest, reason_to_process
from batch.periods import Period, day_of, periods_overlapping
from batch.report import BatchLake, RunReport
from batch.restate import hours_to_restate
from batch.restating import Restatement, restate_hours
from batch.rollup import aggregation_rollup, rollup
from batch.sealing import is_sealed
from batch.spec_restating import definition, restate_spec_hours, spec_hours_to_restate
from formats.batch import (
    JSON_CONTENT_TYPE,
    Manifest,
    aggregate_rollup_to_parquet,
    manifest_from_json,
    manifest_to_json,
    rollups_to_parquet,
)
from formats.lake import (
    RAW_DIR,
    manifest_key,
    parse_raw_key,
    rollup_key,
    spec_manifest_key,
    spec_rollup_key,
    spec_rollup_prefix,
)
from formats.parquet import PARQUET_CONTENT_TYPE

__all__ = ["Plan", "Progress", "UnreadableHourError", "run_batch"]

class UnreadableHourError(RuntimeError):
    """A sealed period has raw files and none of them could be read: its rollup would be wrong."""


@dataclass(frozen=True, slots=True)
class Plan:
    """--from/--to: recompute the hours overlapping [from_ms, to_ms) and their days, even when up to date."""

    from_ms: int | None = None
    to_ms: int | None = None

    @property
    def backfill(self) -> bool:
        return self.from_ms is not None or self.to_ms is not None


# Called after each step of a run with (steps done, steps in all): one step per period considered,
# computed or not, then one per hour whose windows are considered for restatement.
Progress = Callable[[int, int], None]


def run_batch(lake: BatchLake, *, sealed_until_ms: int | None, plan: Plan, say: Callable[[str], None],
              restatement: Restatement | None = None, progress: Progress | None = None,
              spec: Spec | None = None) -> RunReport:
    report = RunReport()
    hours = _raw_listing(lake, say, report)
    selected = periods_overlapping(sorted(hours), plan.from_ms, plan.to_ms)
    periods = [Period.hourly(h) for h in selected] + [Period.daily(d) for d in sorted({day_of(h) for h in selected})]
    if restatement is None:
        window_hours = []
    elif spec is None:
        window_hours = hours_to_restate(restatement.windows, hours, plan.from_ms, plan.to_ms)
    else:
        window_hours = spec_hours_to_restate(spec, restatement.windows, hours, plan.from_ms, plan.to_ms)
    total = len(periods) + len(window_hours)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    if spec is not None:
        _spec_periods(lake, spec, hours, periods, sealed_until_ms, plan, say, report, step)
        if restatement is not None:
            restate_spec_hours(lake, spec, hours, window_hours, sealed_until_ms, plan.backfill, restatement, say,
                               report, step)
        return report
    prefix = lake.prefix
    manifests = lake.list_etags(f"{prefix}batch/manifests/")
    outputs = {*lake.list_etags(f"{prefix}aggregated/hourly/"), *lake.list_etags(f"{prefix}aggregated/daily/")}
    for period in periods:
        listing = {key: etag for hour in period.hours() for key, etag in hours.get(hour, {}).items()}
        key = manifest_key(prefix, period.kind, period.start_ms)
        old = (read_manifest(lake, key, manifest_from_json, say, "its period is computed again")
               if key in manifests else None)
        if not is_sealed(period, sealed_until_ms, processed_before=old is not None):
            report.not_sealed.append(period)
        else:
            reason = reason_to_process(old, listing, output_present=old is not None and old.output in outputs)
            if reason is None and plan.backfill:
                reason = "backfill (--from/--to)"
            if reason is None:
                report.up_to_date += 1
            else:
                _process(lake, period, listing, reason, say, report)
        step()
    if restatement is not None:
        restate_hours(lake, hours, window_hours, sealed_until_ms, plan.backfill, restatement, say, report, step)
    return report


def _raw_listing(lake: BatchLake, say: Callable[[str], None], report: RunReport) -> dict[int, dict[str, str]]:
    """Every object under events/, by hour folder; objects outside any hour folder are reported."""
    hours: dict[int, dict[str, str]] = {}
    for key, etag in sorted(lake.list_etags(f"{lake.prefix}{RAW_DIR}").items()):
        hour = parse_raw_key(lake.prefix, key).hour_start_ms
        if hour is None:
            say(f"warning: skipped s3://{lake.bucket}/{key}: foreign object, not in an hour folder "
                "events/year=YYYY/month=MM/day=DD/hour=HH/")
            report.skipped.add(key)
            continue
        hours.setdefault(hour, {})[key] = etag
    return hours


def _check_inputs(lake: BatchLake, period: Period, inputs: PeriodInputs, say: Callable[[str], None],
                  report: RunReport) -> None:
    """After a period's files were read: report those skipped, and refuse a period none could be read of."""
    for key, why in sorted(inputs.skipped.items()):
        say(f"warning: {period.label()}: skipped s3://{lake.bucket}/{key}: {why}")
    report.skipped.update(inputs.skipped)
    if inputs.archive_files and not inputs.events:
        first = min(inputs.skipped)
        raise UnreadableHourError(
            f"error: {period.label()} is sealed but cannot be read: none of its {inputs.archive_files} raw files "
            f"could be counted (s3://{lake.bucket}/{first}: {inputs.skipped[first]})")


def _process(lake: BatchLake, period: Period, listing: Mapping[str, str], reason: str, say: Callable[[str], None],
             report: RunReport) -> None:
    inputs = PeriodInputs(lake.prefix, listing, lake.get_bytes)
    rows = rollup(period, inputs.reader())
    _check_inputs(lake, period, inputs, say, report)
    output = None
    if rows:
        output = rollup_key(lake.prefix, period.kind, period.start_ms)
        lake.put_bytes(output, rollups_to_parquet(rows), PARQUET_CONTENT_TYPE)
        report.objects_written += 1
    where = f"s3://{lake.bucket}/{output}" if output else "no output (no event counted)"
    say(f"{period.label()}: {len(rows)} rows from {inputs.events} events ({reason}): {where}")
    manifest = Manifest(period=period.kind, start_ms=period.start_ms, end_ms=period.end_ms, inputs=dict(listing),
                        skipped=dict(inputs.skipped), events=inputs.events, rows=len(rows), output=output)
    lake.put_bytes(manifest_key(lake.prefix, period.kind, period.start_ms), manifest_to_json(manifest),
                   JSON_CONTENT_TYPE)
    report.objects_written += 1
    report.processed.append(period)


def _spec_periods(lake: BatchLake, spec: Spec, hours: Mapping[int, Mapping[str, str]], periods: list[Period],
                  sealed_until_ms: int | None, plan: Plan, say: Callable[[str], None], report: RunReport,
                  step: Callable[[], None]) -> None:
    """The periods of a spec: per period, every aggregation whose inputs or definition changed."""
    prefix = lake.prefix
    manifests = lake.list_etags(f"{prefix}batch/manifests/aggregations/")
    outputs = {key for aggregation in spec.aggregations for kind in ("hourly", "daily")
               for key in lake.list_etags(spec_rollup_prefix(prefix, aggregation.name, kind))}
    for period in periods:
        listing = {key: etag for hour in period.hours() for key, etag in hours.get(hour, {}).items()}
        due: list[tuple[Aggregation, str]] = []
        unsealed = False
        for aggregation in spec.aggregations:
            key = spec_manifest_key(prefix, aggregation.name, period.kind, period.start_ms)
            old = (read_manifest(lake, key, manifest_from_json, say, "its period is computed again")
                   if key in manifests else None)
            if not is_sealed(period, sealed_until_ms, processed_before=old is not None):
                unsealed = True
                continue
            reason = reason_to_process(old, listing, output_present=old is not None and old.output in outputs)
            if reason is None and old is not None and old.definition != definition(spec, aggregation):
                reason = "its aggregation's definition changed"
            if reason is None and plan.backfill:
                reason = "backfill (--from/--to)"
            if reason is not None:
                due.append((aggregation, reason))
        if unsealed:
            report.not_sealed.append(period)
        if due:
            _process_spec(lake, spec, period, listing, due, say, report)
        elif not unsealed:
            report.up_to_date += 1
        step()


def _process_spec(lake: BatchLake, spec: Spec, period: Period, listing: Mapping[str, str],
                  due: list[tuple[Aggregation, str]], say: Callable[[str], None], report: RunReport) -> None:
    inputs = spec_inputs(lake.prefix, listing, lake.get_bytes)
    judged = dict(zip((a.name for a in spec.aggregations), judge_to_tables(inputs, spec), strict=True))
    _check_inputs(lake, period, inputs, say, report)
    for aggregation, reason in due:
        layout = aggregation.rollup_layout()
        table = aggregation_rollup(period, layout, judged[aggregation.name])
        output = None
        if table is not None:
            output = spec_rollup_key(lake.prefix, aggregation.name, period.kind, period.start_ms)
            lake.put_bytes(output, aggregate_rollup_to_parquet(table, layout), PARQUET_CONTENT_TYPE)
            report.objects_written += 1
        rows = 0 if table is None else table.num_rows
        where = f"s3://{lake.bucket}/{output}" if output else "no output (no event counted)"
        say(f"{period.label()} {aggregation.name}: {rows} rows from {judged[aggregation.name].num_rows} of "
            f"{inputs.events} events ({reason}): {where}")
        manifest = Manifest(period=period.kind, start_ms=period.start_ms, end_ms=period.end_ms, inputs=dict(listing),
                            skipped=dict(inputs.skipped), events=inputs.events, rows=rows, output=output,
                            definition=definition(spec, aggregation))
        lake.put_bytes(spec_manifest_key(lake.prefix, aggregation.name, period.kind, period.start_ms),
                       manifest_to_json(manifest), JSON_CONTENT_TYPE)
        report.objects_written += 1
    report.processed.append(period)
