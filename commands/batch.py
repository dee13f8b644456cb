"""`faust -A app batch [--from T] [--to T]`: the batch layer's hourly and daily rollups (batch/).

Each run, successful or not, adds itself to the batch status hash in Redis (RunStatus), which the
workers export as `pipeline_batch_*` metrics; a long run shows its progress (batch/progress.py).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, NoReturn, TextIO

import click
from faust.cli import AppCommand, option

from agents.runner import exit_with_line
from batch.job import Plan, UnreadableHourError, run_batch
from batch.periods import last_sealed_hour, parse_time
from batch.progress import ProgressReporter
from batch.report import RunReport
from batch.restating import Restatement
from batch.sealing import sealed_until, uncovered
from batch.stage1 import Stage1Reader
from batch.stage2 import Stage2View, read_stage2
from formats.batch import BatchRun
from formats.events import iso_utc
from kafka_io.clients import BrokerAccessError, check_access, client_options
from kafka_io.topics import topics_for
from settings import Settings
from sinks.lake import S3Lake, make_s3_client_factory
from sinks.policy import BATCH_S3_ATTEMPTS, SinkConfigurationError, SinkUnavailableError
from sinks.redis_store import RedisWindowStore
from sinks.startup import StoreAccessError, check_stores, time_left_s

# A backfill over more than this needs --long-range: every archived hour in it is read again, and every window
# of those hours rewritten (a typo such as --to 2126-11-01 would restate everything since the archive began).
LONG_RANGE_MS = 31 * 24 * 3_600_000
KAFKA_DEADLINE_S = 120.0  # reading stage 1's topics; past it the broker is not answering
ARCHIVE_WAIT_EXTRA_S = 30.0  # on top of ARCHIVE_MAX_AGE, for the archive to catch up with an observation


def _say(line: str) -> None:
    # The real stdout: the command runs inside a mode Worker, which may redirect sys.stdout to its log.
    stream = sys.__stdout__ or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _time_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    """One line naming the option and exit status 2, rather than click's three-line usage error."""
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        exit_with_line(f"error: invalid {param.opts[0]}: {exc}", 2)
        raise  # not reached: exit_with_line ends the process


async def sealed_until_now(settings: Settings) -> int | None:
    """The sealing bound (batch/sealing.py): observe stage 1, then wait for its archive to catch up."""
    topics = topics_for(settings)
    stage1 = Stage1Reader(client_options(settings.kafka), watermarks=topics.watermarks,
                          ingest_state=topics.ingest_state, partitions=settings.kafka.topic_partitions)
    await stage1.start()
    try:
        view = await stage1.observe()
        if view.low_watermark_ms is None:
            _say(f"no low watermark yet on {topics.watermarks} (not every input partition has published one): "
                 "only hours processed before are checked")
            return None
        archive_next = dict(view.archive_next)
        if uncovered(view.fold_next, archive_next):
            timeout_s = settings.pipeline.archive_max_age_ms / 1000 + ARCHIVE_WAIT_EXTRA_S
            archive_next = await stage1.wait_for_archive(view.fold_next, timeout_s=timeout_s)
        behind = uncovered(view.fold_next, archive_next)
        if behind:
            _say(f"the raw archive of input partitions {behind} has not caught up with stage 1: hours after the last "
                 "processed ones wait for the next run")
        return sealed_until(view.low_watermark_ms, behind)
    finally:
        await stage1.stop()


async def stage2_now(settings: Settings) -> Stage2View:
    """What stage 2 has exported (batch/stage2.py), read after the sealing bound: it only goes further."""
    partitions = settings.kafka.topic_partitions
    return await read_stage2(client_options(settings.kafka), export_state=topics_for(settings).export_state,
                             partitions=partitions, source_partitions=partitions)


class batch(AppCommand):  # noqa: N801 - the class name is the subcommand name
    """Compute the hourly and daily rollups of every sealed hour whose raw files changed, and restate the
    speed layer's windows of those hours in S3 and Redis (the batch layer)."""

    options = [
        option("--from", "from_", metavar="T", callback=_time_option,
               help="Recompute the hours overlapping [--from, --to) and their days, restate the hours of "
                    "windows overlapping them and write those windows to Redis, even if up to date. "
                    "ISO-8601 (no zone means UTC) or epoch milliseconds."),
        option("--to", "to", metavar="T", callback=_time_option, help="End of the range (exclusive)."),
        option("--long-range", is_flag=True, default=False,
               help=f"Allow a range of more than {LONG_RANGE_MS // 86_400_000} days, or --to without --from (every "
                    "archived hour in it is read again and its windows rewritten)."),
    ]

    async def run(self, from_: int | None, to: int | None, long_range: bool) -> None:
        started_s = time.monotonic()
        settings: Settings = self.app.settings  # type: ignore[attr-defined]
        if from_ is not None and to is not None and to <= from_:
            exit_with_line(f"error: invalid --to: {iso_utc(to)} is not after --from {iso_utc(from_)}", 2)
        refusal = long_range_refusal(from_, to, now_ms=time.time_ns() // 1_000_000)
        if refusal is not None and not long_range:
            exit_with_line(refusal, 2)
        redis_settings = settings.redis
        redis = RedisWindowStore(redis_settings.url, redis_settings.key_prefix, redis_settings.ttl_ms,
                                 redis_settings.latest_n)
        status = RunStatus(redis, started_s)
        lake_settings = settings.lake
        lake = S3Lake(lake_settings.bucket, lake_settings.prefix,
                      make_s3_client_factory(lake_settings.endpoint_url, lake_settings.region,
                                             max_attempts=BATCH_S3_ATTEMPTS))
        wait_s = settings.startup_timeout_ms / 1000
        started = time.monotonic()
        try:
            await check_access(settings.kafka, wait_s=wait_s)
            # One STARTUP_TIMEOUT for the broker and the stores together, as the worker's start-up has.
            await check_stores(lake, redis, wait_s=time_left_s(wait_s, started))
        except (BrokerAccessError, StoreAccessError) as exc:
            exit_with_line(f"error: {exc}", 2)
        try:
            bound = await asyncio.wait_for(sealed_until_now(settings), KAFKA_DEADLINE_S)
        except Exception as exc:  # noqa: BLE001 - any failure to read stage 1 ends the run in one line
            status.fail(f"error: cannot read stage 1's watermarks and positions from Kafka: {exc!r}")
        try:
            stage2 = await asyncio.wait_for(stage2_now(settings), KAFKA_DEADLINE_S)
        except Exception as exc:  # noqa: BLE001
            status.fail(f"error: cannot read stage 2's export state from Kafka: {exc!r}", bound)
        if bound is not None:
            _say(f"sealed: every hour ending by {iso_utc(bound)}")
        restatement = Restatement(settings.pipeline.windows, settings.kafka.topic_partitions, stage2, redis)
        stderr = sys.__stderr__ or sys.stderr
        progress = ProgressReporter(tty=stderr.isatty(), draw=lambda text: _draw(stderr, text), say=_say,
                                    clock=time.monotonic)
        lake.open()
        redis.open()
        try:
            report = await asyncio.to_thread(run_batch, lake, sealed_until_ms=bound, plan=Plan(from_, to),
                                             say=progress.line, restatement=restatement, progress=progress,
                                             spec=settings.pipeline.spec)
        except UnreadableHourError as exc:
            progress.finish()
            status.fail(str(exc), bound)
        except (SinkUnavailableError, SinkConfigurationError) as exc:
            progress.finish()
            status.fail(f"error: {exc}", bound)
        finally:
            lake.close()
        progress.finish()
        status.succeed(report, bound)
        redis.close()
        _say(summary(report))


def long_range_refusal(from_ms: int | None, to_ms: int | None, *, now_ms: int) -> str | None:
    """Why [--from, --to) needs --long-range (a range without --from reaches back to the archive's start, one
    without --to up to now), or None."""
    if from_ms is None and to_ms is None:
        return None  # a plain run: the hours whose raw files changed
    if from_ms is None:
        return (f"error: --to {iso_utc(to_ms or 0)} without --from recomputes every archived hour before it: give "
                "--from, or --long-range to mean it")
    span_ms = (now_ms if to_ms is None else to_ms) - from_ms
    if span_ms <= LONG_RANGE_MS:
        return None
    return (f"error: --from {iso_utc(from_ms)} {'up to now' if to_ms is None else f'--to {iso_utc(to_ms)}'} spans "
            f"{span_ms // 86_400_000:,} days, over the {LONG_RANGE_MS // 86_400_000} a backfill may span without "
            "--long-range (every archived hour in it is read again and its windows rewritten)")


def _draw(stream: TextIO, text: str) -> None:
    stream.write(text)
    stream.flush()


class RunStatus:
    """Adds the run to the batch status hash in Redis (sinks/redis_store.py), which the workers export
    as metrics. Best effort: a run whose status cannot be written says so and keeps its outcome."""

    def __init__(self, redis: RedisWindowStore, started_s: float) -> None:
        self.redis = redis
        self.started_s = started_s

    def succeed(self, report: RunReport, bound: int | None) -> None:
        self._record(BatchRun(**self._times(bound), ok=True, periods_computed=len(report.processed),
                              windows_restated=report.windows_restated, rows_restated=report.rows_restated,
                              objects_written=report.objects_written, objects_skipped=report.skipped_objects))

    def fail(self, line: str, bound: int | None = None) -> NoReturn:
        """Record a failed run, then end the process with `line` (status 1)."""
        self._record(BatchRun(**self._times(bound), ok=False))
        self.redis.close()
        exit_with_line(line, 1)
        raise AssertionError("not reached: exit_with_line ends the process")

    def _times(self, bound: int | None) -> dict[str, Any]:
        return {"finished_at_ms": time.time_ns() // 1_000_000,
                "duration_ms": round((time.monotonic() - self.started_s) * 1000),
                "last_sealed_hour_ms": None if bound is None else last_sealed_hour(bound)}

    def _record(self, run: BatchRun) -> None:
        try:
            self.redis.open()
            self.redis.record_batch_run(run)
        except (SinkUnavailableError, SinkConfigurationError) as exc:
            _say(f"warning: the run's status was not written to Redis ({exc}): the batch metrics miss this run")


def summary(report: RunReport) -> str:
    hours = sum(1 for period in report.processed if period.kind == "hourly")
    line = (f"batch: {_count(hours, 'hour')} and {_count(len(report.processed) - hours, 'day')} computed, "
            f"{report.up_to_date} up to date, {len(report.not_sealed)} not sealed yet; "
            f"{_count(report.objects_written, 'object')} written, "
            f"{_count(report.skipped_objects, 'foreign object')} skipped; "
            f"windows of {_count(report.restated_hours, 'hour')} checked: {_count(report.rows_restated, 'row')} "
            f"restated in {_count(report.windows_restated, 'window')}, {report.restate_up_to_date} up to date, "
            f"{report.restate_not_sealed} not sealed yet, {report.restate_waiting} waiting for stage 2")
    if report.redis_rows_written:
        line += f"; {_count(report.redis_rows_written, 'row')} written to Redis"
    if report.restate_problems:
        line += f"; {_count(report.restate_problems, 'stored row')} the raw archive cannot account for"
    return line


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
