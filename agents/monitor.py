"""What an operator watches: startup summary, readiness, lag, state size.

A timer samples the slow figures (state size needs a directory walk) so that a
`/metrics` scrape only reads memory. Lag is processing lag: the partition's high
watermark (from the last fetch) minus the next offset the stage will process. Another timer
reads the batch job's status hash from Redis (metrics.py says why).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ops.metrics import directory_bytes
from settings import is_loopback
from sinks.policy import SinkConfigurationError, SinkUnavailableError
from sinks.redis_store import LUA_FIXED, lua_is_patched

if TYPE_CHECKING:
    from agents.pipeline import Pipeline
    from formats.batch import BatchStatus
    from ops.stats import PipelineStats
    from settings import Settings
    from sinks.outputs import Outputs

log = logging.getLogger(__name__)

LAG_SAMPLE_S = 5.0
# One HGETALL per worker every 5 s: cheap, and the batch metrics are never more than a scrape behind.
BATCH_STATUS_SAMPLE_S = 5.0
PROGRESS_EVERY_S = 5.0
# A lag warning repeats at most this often while the lag stays high.
LAG_WARNING_EVERY_S = 30.0
STATE_TABLES = ("ingest", "export")  # one RocksDB directory per stage, one database per partition under it


class MonitoredApp(Protocol):
    """The faust app as the monitor sees it (app.PipelineApp is one)."""

    settings: Settings
    stats: PipelineStats
    outputs: Outputs
    pipeline: Pipeline

    def task(self, fun: Any) -> Any: ...

    def timer(self, interval: float, *, name: str | None = None) -> Any: ...


@dataclass(slots=True)
class MonitorState:
    lag: dict[tuple[str, int], int] = field(default_factory=dict)
    state_bytes: dict[str, int] = field(default_factory=dict)
    lag_warned_at_s: float | None = None
    batch_status: BatchStatus | None = None  # kept while Redis cannot be read


def not_ready_reasons(app: MonitoredApp) -> list[str]:
    """Why this worker cannot serve its state yet; empty once it can."""
    pipeline = app.pipeline
    runners = (pipeline.ingest_runner, pipeline.export_runner)
    reasons = []
    if any(runner.rebalancing for runner in runners):
        reasons.append("rebalancing")
    elif not all(runner.ready for runner in runners):
        reasons.append("restoring state")
    if not any(runner.assigned for runner in runners):
        reasons.append("no partitions assigned")
    return reasons


def processing_lag(app: MonitoredApp) -> dict[tuple[str, int], int]:
    pipeline = app.pipeline
    lag = {}
    for runner in (pipeline.ingest_runner, pipeline.export_runner):
        for partition, records in runner.lag().items():
            lag[(runner.stage.topic, partition)] = records
    return lag


def startup_summary(app: MonitoredApp) -> str:
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


def redis_version_warning(product: str, version: str, host: str) -> str | None:
    """What to tell the operator of this Redis (or Valkey) server, if it may lack the Lua fix the worker's
    scripts make it need (sinks.redis_store.LUA_FIXED); None when it has it."""
    patched = lua_is_patched(product, version)
    if patched:
        return None
    fixed = ", ".join(".".join(map(str, release)) for release in LUA_FIXED[product])
    name = "Valkey" if product == "valkey" else "Redis"
    said = f"{name} {version}" if patched is not None else f"{name} of unknown version {version[:32]!r}"
    return (f"{said} at {host}: releases before {fixed} (in their lines) have CVE-2025-49844, remote code execution "
            "through a Lua script, and the worker needs scripting, so EVAL cannot be denied: upgrade the server, "
            "unless its build carries the fix under the old number (Debian 12's redis-server 5:7.0.15-1~deb12u6 "
            "and later do)")


class Monitor:
    def __init__(self, app: MonitoredApp) -> None:
        self.app = app
        self.state = MonitorState()

    def sample(self) -> None:
        self.state.lag = lag = processing_lag(self.app)
        events = self.app.pipeline.topics.events
        self._warn_on_lag(sum(n for (topic, _), n in lag.items() if topic == events))
        state_dir = self.app.settings.state_dir
        self.state.state_bytes = {name: directory_bytes(state_dir / name) for name in STATE_TABLES}

    def _warn_on_lag(self, input_lag: int) -> None:
        threshold = self.app.settings.pipeline.lag_warning_records
        now_s = time.monotonic()
        if input_lag <= threshold:
            self.state.lag_warned_at_s = None
            return
        warned = self.state.lag_warned_at_s
        if warned is None or now_s - warned >= LAG_WARNING_EVERY_S:
            log.warning("input processing lag is %d records (warning above %d): this worker falls behind; "
                        "add workers (up to the partition count) or check the sinks", input_lag, threshold)
            self.state.lag_warned_at_s = now_s


def register(app: MonitoredApp) -> Monitor:
    monitor = Monitor(app)

    async def announce() -> None:  # faust runs tasks once the worker is up
        log.info("%s", startup_summary(app))
        try:
            product, version, host = await app.outputs.read_redis_server()
        except (SinkUnavailableError, SinkConfigurationError) as exc:
            log.debug("Redis server version not read: %s", exc)  # outages show in the sink metrics
            return
        # On loopback or a unix socket only local users can reach it: said, not warned of (the embedded stack's).
        message = redis_version_warning(product, version, host)
        if message is not None:
            log.log(logging.INFO if is_loopback(host) or host.startswith("/") else logging.WARNING, "%s", message)

    async def sample() -> None:
        monitor.sample()

    async def log_progress() -> None:
        stats = app.stats
        total, rate = stats.rate_since_last_call(time.monotonic())
        if rate > 0:
            log.info("consumed %d events (%.0f events/s), %d dead-lettered, %d late, frontier %s",
                     total, rate, stats.dead_letters, stats.late,
                     stats.frontier_over(app.pipeline.ingest_runner.assigned))

    async def read_batch_status() -> None:
        try:
            status = await app.outputs.read_batch_status()
        except (SinkUnavailableError, SinkConfigurationError, ValueError) as exc:
            log.debug("batch status not read from Redis: %s", exc)  # Redis outages show in the sink metrics
            return
        monitor.state.batch_status = status

    app.task(announce)
    app.task(read_batch_status)  # at start too, so a new worker exports it before its first tick
    app.timer(LAG_SAMPLE_S, name="lag-sample")(sample)
    app.timer(BATCH_STATUS_SAMPLE_S, name="batch-status")(read_batch_status)
    app.timer(PROGRESS_EVERY_S, name="progress")(log_progress)
    return monitor
