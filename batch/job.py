"""One run of the batch layer: every sealed period whose inputs changed, hours first, then days;
then, given a Restatement, the windows of every sealed hour whose inputs changed (batch/restating.py):
the hours holding a window over an hour with raw files (batch/restate.hours_to_restate).

Per period: list its raw folders (key -> ETag), compare with its manifest, and if they differ
(or it has none) compute its rollup, write it, and only then write the manifest. A crash at any
point leaves either an old manifest (the period is computed again, its output replaced whole) or
a new one whose output is already in place. Days are computed after their hours, from the raw
files (exact distinct counts and percentiles cannot be merged from hourly rows).

Blocking (S3 calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from batch.inputs import PeriodInputs
from batch.manifest import read_manifest, reason_to_process
from batch.periods import Period, day_of, periods_overlapping
from batch.report import BatchLake, RunReport
from batch.restate import hours_to_restate
from batch.restating import Restatement, restate_hours
from batch.rollup import rollup
from batch.sealing import is_sealed
from formats.batch import JSON_CONTENT_TYPE, Manifest, manifest_from_json, manifest_to_json, rollups_to_parquet
from formats.lake import RAW_DIR, manifest_key, parse_raw_key, rollup_key
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
              restatement: Restatement | None = None, progress: Progress | None = None) -> RunReport:
    report = RunReport()
    hours = _raw_listing(lake, say, report)
    selected = periods_overlapping(sorted(hours), plan.from_ms, plan.to_ms)
    periods = [Period.hourly(h) for h in selected] + [Period.daily(d) for d in sorted({day_of(h) for h in selected})]
    window_hours = ([] if restatement is None else
                    hours_to_restate(restatement.windows, hours, plan.from_ms, plan.to_ms))
    total = len(periods) + len(window_hours)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

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


def _process(lake: BatchLake, period: Period, listing: Mapping[str, str], reason: str, say: Callable[[str], None],
             report: RunReport) -> None:
    inputs = PeriodInputs(lake.prefix, listing, lake.get_bytes)
    rows = rollup(period, inputs.reader())
    for key, why in sorted(inputs.skipped.items()):
        say(f"warning: {period.label()}: skipped s3://{lake.bucket}/{key}: {why}")
    report.skipped.update(inputs.skipped)
    if inputs.archive_files and not inputs.events:
        first = min(inputs.skipped)
        raise UnreadableHourError(
            f"error: {period.label()} is sealed but cannot be read: none of its {inputs.archive_files} raw files "
            f"could be counted (s3://{lake.bucket}/{first}: {inputs.skipped[first]})")
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
