"""The Faust application, built from settings.

`faust -A app worker` looks up the `app` attribute of this module; it is created on first
access (module `__getattr__`), so importing this module has no side effects and tests build
their own app with `create_app(settings)`.
"""

from __future__ import annotations

import gc
import logging
import os
import ssl
import time
from functools import cache
from typing import TYPE_CHECKING, Any

import faust

from agents.stats import PipelineStats
from settings import KafkaSettings, Settings, load_or_exit

if TYPE_CHECKING:
    from agents.export import Exporter
    from agents.ingest import Ingest
    from agents.monitor import Monitor
    from channels import Channels
    from metrics import PipelineMetrics
    from outputs import Outputs


# Records buffered per input stream before faust pauses fetching: the bound on memory
# when the agent falls behind (65,536 cost a quarter of the throughput in research runs).
STREAM_BUFFER_MAXSIZE = 200_000


class PipelineApp(faust.App):
    """A faust.App that carries its typed settings and the pipeline's shared state."""

    settings: Settings
    stats: PipelineStats
    metrics: PipelineMetrics
    outputs: Outputs
    channels: Channels
    ingest: Ingest
    exporter: Exporter
    observer: Monitor

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        # faust waits here, before a rebalance gives partitions away and before a clean
        # stop, for every record it handed out to be acked; stage 1 acks a record only once
        # its raw archive file is written, so the open files are written first.
        await self.ingest.flush_archive()
        await super()._consumer_wait_empty(consumer, logger)


def _broker_credentials(kafka: KafkaSettings) -> faust.types.auth.CredentialsT | None:
    protocol = kafka.security_protocol
    context = ssl.create_default_context() if protocol in ("SSL", "SASL_SSL") else None
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def create_app(settings: Settings) -> PipelineApp:
    import commands.produce  # noqa: F401 - defining the command registers `faust -A app produce`
    import diagnostics
    import faust_patches
    from agents import export, ingest, monitor
    from channels import declare
    from metrics import PipelineMetrics
    from outputs import Outputs
    from web import dashboard, views

    faust_patches.install()
    tune_garbage_collector()
    set_pipeline_log_level(settings.log_level)

    app = PipelineApp(
        settings.app_id,
        env={},  # settings.py is the only reader of the environment
        broker=settings.kafka.broker_urls,
        broker_credentials=_broker_credentials(settings.kafka),
        store="rocksdb://",
        datadir=str(settings.state_dir),
        topic_partitions=settings.kafka.topic_partitions,
        topic_replication_factor=settings.kafka.topic_replication,
        web_bind=settings.web.bind,
        web_port=settings.web.port,
        web_host=settings.web.host,
        # Tansu answers a first JoinGroup after half the session timeout (faust's default
        # of 60 s meant a 30 s wait); 10 s keeps a restart's rejoin short too.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        # Brokers answer fetches with tens of thousands of records; faust's default stream
        # buffer (4,096) then stalls the fetch loop. This bounds memory instead.
        stream_buffer_maxsize=STREAM_BUFFER_MAXSIZE,
        cython_optimizations=True,
        monitor=faust_patches.LeanMonitor(),
        # Tansu reports a partition's high watermark as the base offset of its last record
        # batch + 1, so a changelog's persisted offset can exceed it after a clean stop;
        # faust's check would then refuse to start. Recovery itself reads whole batches.
        recovery_consistency_check=False,
        origin="app",
    )
    faust_patches.skip_per_event_sensors(app)
    app.settings = settings
    app.stats = PipelineStats()
    app.metrics = PipelineMetrics()
    app.outputs = Outputs(settings, app.stats, app.metrics)
    app.channels = channels = declare(app)
    app.ingest = ingest.register(app, channels)
    app.exporter = export.register(app, channels)
    app.observer = monitor.register(app, channels)
    connect_metrics(app)
    views.register(app)
    dashboard.register(app)
    diagnostics.register(app)
    return app


def connect_metrics(app: PipelineApp) -> None:
    """Point the scrape-time metrics at the live state they report."""
    from agents.monitor import not_ready_reasons
    from web.views import partition_watermarks

    stats, live = app.stats, app.metrics.live
    live.consumed = lambda: stats.consumed
    live.dead_letters = lambda: stats.dead_letters
    live.late = lambda: stats.late
    live.windows_exported = lambda: stats.windows_exported
    live.rows_exported = lambda: stats.rows_exported
    live.archive_buffered = lambda: stats.archive_buffered
    live.watermarks_ms = lambda: partition_watermarks(app, time.time_ns() // 1_000_000)
    live.low_watermark_ms = lambda: stats.low_watermark_ms
    live.watermark_age_s = lambda: (None if stats.low_watermark_advanced_at_ms is None
                                    else max(0.0, time.time() - stats.low_watermark_advanced_at_ms / 1000))
    live.lag = lambda: app.observer.state.lag
    live.state_bytes = lambda: app.observer.state.state_bytes
    live.ready = lambda: not not_ready_reasons(app)


# Top-level packages and modules of the pipeline: their loggers follow LOG_LEVEL, while
# faust's own loggers follow `faust worker -l`.
PIPELINE_LOGGERS = ("agents", "app", "commands", "diagnostics", "faust_patches", "metrics", "outputs", "sinks",
                    "tables", "web")


def set_pipeline_log_level(level: str) -> None:
    for name in PIPELINE_LOGGERS:
        logging.getLogger(name).setLevel(level.upper())


def tune_garbage_collector() -> None:
    """Collect young objects less often.

    A worker holds hundreds of thousands of long-lived objects (buffered records awaiting
    their archive file, faust's stream buffer), and allocates several per record; with
    CPython's default thresholds (700, 10, 10) the cyclic collector walked them so often
    that py-spy charged ~20% of the main thread to allocation sites. Reference counting
    still frees almost everything at once; only cycles wait longer.
    """
    gc.set_threshold(50_000, 20, 100)


@cache
def _default_app() -> PipelineApp:
    return create_app(load_or_exit(os.environ))


def __getattr__(name: str) -> PipelineApp:
    if name == "app":
        return _default_app()
    raise AttributeError(name)
