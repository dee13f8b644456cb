"""What an operator watches: startup summary, assignments, recovery progress, lag, state size.

Timers sample the slow figures (consumer lag needs a broker round trip, state size a
directory walk) so that a `/metrics` scrape only reads memory.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faust.exceptions import ConsumerNotStarted

from metrics import directory_bytes

if TYPE_CHECKING:
    from faust.types import TP

    from app import PipelineApp
    from channels import Channels

log = logging.getLogger(__name__)

LAG_SAMPLE_S = 5.0
RECOVERY_LOG_S = 1.0
# A lag warning repeats at most this often while the lag stays high.
LAG_WARNING_EVERY_S = 30.0


@dataclass(slots=True)
class MonitorState:
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)
    recovery_total: int = 0  # changelog records to restore, as first seen in this recovery
    lag_warned_at_s: float | None = None


def assignment(app: PipelineApp) -> set[TP]:
    """The consumer's assigned partitions; empty before the consumer has started."""
    try:
        return set(app.consumer.assignment())
    except ConsumerNotStarted:
        return set()


def not_ready_reasons(app: PipelineApp) -> list[str]:
    """Why this worker cannot serve its tables yet; empty once it can."""
    reasons = []
    if app.rebalancing:
        reasons.append("rebalancing")
    if not app.tables.recovery.completed.is_set():
        reasons.append("tables not recovered")
    topics = {app.channels.events.get_topic_name(), app.channels.partials.get_topic_name()}
    if not any(tp.topic in topics for tp in assignment(app)):
        reasons.append("no partitions assigned")
    return reasons


def describe_partitions(assigned: Iterable[TP]) -> str:
    """`events: 0,2; partials: 1` (topics sorted, partitions ascending), or `none`."""
    by_topic: dict[str, list[int]] = {}
    for tp in assigned:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    if not by_topic:
        return "none"
    return "; ".join(f"{topic}: {','.join(map(str, sorted(parts)))}" for topic, parts in sorted(by_topic.items()))


def recovery_percent(total: int, remaining: int) -> float:
    """Share of the changelog records restored so far (100 when there was nothing to do)."""
    if total <= 0:
        return 100.0
    return max(0.0, min(100.0, 100.0 * (total - remaining) / total))


def lag_records(ends: Mapping[Any, int | None], committed: Mapping[Any, int | None]) -> dict[Any, int]:
    """End offset minus committed offset, for partitions where both are known, never below 0.

    (Tansu reports an end offset that can be a batch short of the real end, so a
    committed offset beyond it is possible and means no lag.)
    """
    lag = {}
    for tp, end in ends.items():
        done = committed.get(tp)
        if end is not None and done is not None:
            lag[tp] = max(0, end - done)
    return lag


def table_state_bytes(table_dir: Path, table_names: Iterable[str]) -> dict[str, int]:
    """Bytes on disk per table: faust keeps one RocksDB directory per table partition."""
    sizes = dict.fromkeys(table_names, 0)
    if not table_dir.is_dir():
        return sizes
    for child in table_dir.iterdir():
        for name in sizes:
            if child.name.startswith(f"{name}-") and child.name.endswith(".db"):
                sizes[name] += directory_bytes(child)
    return sizes


def startup_summary(app: PipelineApp) -> str:
    settings = app.settings
    kafka, pipeline = settings.kafka, settings.pipeline
    windows = ", ".join(
        f"{w.name} ({w.size_ms // 1000}s every {w.step_ms // 1000}s)" for w in pipeline.windows)
    return (
        f"pipeline {settings.app_id}: brokers {','.join(kafka.broker_urls)} ({kafka.security_protocol}); "
        f"input {kafka.topic_events} x{kafka.topic_partitions}, dead letters {kafka.topic_dlq}, "
        f"late {kafka.topic_late}; windows {windows}; lateness {pipeline.allowed_lateness_ms} ms, "
        f"idle timeout {pipeline.idle_timeout_ms} ms; lake s3://{settings.lake.bucket}/{settings.lake.prefix} "
        f"at {settings.lake.endpoint_url or 'AWS'}; Redis {app.outputs.redis!r} prefix "
        f"{settings.redis.key_prefix!r}; web http://{settings.web.bind}:{settings.web.port}; "
        f"state {settings.state_dir}")


class Monitor:
    def __init__(self, app: PipelineApp, channels: Channels) -> None:
        self.app = app
        self.channels = channels
        self.state = MonitorState()
        self._recovery_task: asyncio.Future[None] | None = None

    def our_topics(self) -> set[str]:
        return {self.channels.events.get_topic_name(), self.channels.partials.get_topic_name()}

    async def sample_lag(self) -> None:
        app = self.app
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        consumer = app.consumer
        topics = self.our_topics()
        tps = [tp for tp in assignment(app) if tp.topic in topics]
        if not tps:
            self.state.lag = {}
            return
        ends = await consumer.highwaters(*tps)
        committed = {tp: consumer._committed_offset.get(tp) for tp in tps}  # faust's last commit (private)
        lag = lag_records(ends, committed)
        self.state.lag = {(tp.topic, tp.partition): records for tp, records in lag.items()}
        self._warn_on_lag(sum(n for tp, n in lag.items() if tp.topic == self.channels.events.get_topic_name()))

    def _warn_on_lag(self, input_lag: int) -> None:
        threshold = self.app.settings.pipeline.lag_warning_records
        now_s = time.monotonic()
        if input_lag <= threshold:
            self.state.lag_warned_at_s = None
            return
        warned = self.state.lag_warned_at_s
        if warned is None or now_s - warned >= LAG_WARNING_EVERY_S:
            log.warning("input consumer lag is %d records (warning above %d): this worker falls behind; "
                        "add workers (up to the partition count) or check the sinks", input_lag, threshold)
            self.state.lag_warned_at_s = now_s

    def sample_state_size(self) -> None:
        tables = [table.name for table in self.app.tables.values()]
        self.state.state_bytes = table_state_bytes(self.app.conf.tabledir, tables)

    def log_recovery(self) -> None:
        recovery = self.app.tables.recovery
        if recovery.completed.is_set():
            if self.state.recovery_total:
                log.info("recovering tables: 100%% (%d changelog records restored)", self.state.recovery_total)
                self.state.recovery_total = 0
            return
        remaining = recovery.active_remaining_total()
        if remaining <= 0:
            return
        self.state.recovery_total = max(self.state.recovery_total, remaining)
        log.info("recovering tables: %.0f%% (%d of %d changelog records left)",
                 recovery_percent(self.state.recovery_total, remaining), remaining, self.state.recovery_total)

    def follow_recovery(self) -> None:
        """Log recovery progress until it completes (faust starts timers only after the first
        recovery, so this runs as a task started from the assignment)."""
        if self._recovery_task is None or self._recovery_task.done():
            self._recovery_task = asyncio.ensure_future(self._follow_recovery())

    async def _follow_recovery(self) -> None:
        while True:
            await asyncio.sleep(RECOVERY_LOG_S)
            self.log_recovery()
            if self.app.tables.recovery.completed.is_set():
                return

    def log_assignment(self, assigned: Iterable[TP]) -> None:
        topics = self.our_topics()
        ours = [tp for tp in assigned if tp.topic in topics]
        log.info("partitions assigned: %s", describe_partitions(ours))


def register(app: PipelineApp, channels: Channels) -> Monitor:
    monitor = Monitor(app, channels)

    async def announce() -> None:  # faust runs tasks once the worker is up
        log.info("%s", startup_summary(app))

    async def sample() -> None:
        await monitor.sample_lag()
        monitor.sample_state_size()

    async def on_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        monitor.log_assignment(assigned)
        monitor.follow_recovery()

    app.task(announce)
    app.timer(LAG_SAMPLE_S, name="lag-sample")(sample)
    app.on_partitions_assigned.connect(on_assigned)
    return monitor
