"""The Faust application, built from settings.

`faust -A app worker` looks up the `app` attribute of this module; it is created on first
access (module `__getattr__`), so importing this module has no side effects and tests build
their own app with `create_app(settings)`.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import time
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faust
from faust.exceptions import AlreadyConfiguredWarning
from yarl import URL

from agents.faust_compat import (
    QuietWorker,
    WorkerBoot,
    check_version,
    refuse_leftover_commands,
    refuse_worker_overrides,
)
from agents.runner import exit_with_line
from ops.stats import PipelineStats
from settings import Settings, SettingsError, load, load_or_exit

if TYPE_CHECKING:
    from agents.monitor import Monitor
    from agents.pipeline import Pipeline
    from ops.metrics import PipelineMetrics
    from sinks.outputs import Outputs
    from web.admission import Admission


class PipelineApp(faust.App):
    """A faust.App that carries its typed settings and the pipeline's shared state. faust runs the
    web server, timers, CLI and the pipeline service (faust_compat.WorkerBoot)."""

    BootStrategy = WorkerBoot
    settings: Settings
    stats: PipelineStats
    metrics: PipelineMetrics
    outputs: Outputs
    pipeline: Pipeline
    observer: Monitor
    admission: Admission

    async def on_first_start(self) -> None:
        # faust creates only the last level of its datadir; STATE_DIR may name a path not made yet.
        try:
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            exit_with_line(f"error: STATE_DIR {self.settings.state_dir} cannot be created: {exc.strerror}")
        await super().on_first_start()

    def extra_services(self) -> list[Any]:
        """Called by the worker once its command line is applied: the place to refuse flags."""
        web = self.settings.web
        error = refuse_worker_overrides(self.conf, {
            "broker": [f"kafka://{server}" for server in self.settings.kafka.bootstrap_servers],
            "web_port": web.port, "web_bind": web.bind, "web_host": web.host, "web_enabled": True,
            "web_transport": URL("tcp://")})
        if error is not None:
            exit_with_line(error)
        return [self.pipeline]


def create_app(settings: Settings) -> PipelineApp:
    import commands.batch  # noqa: F401 - defining the command registers `faust -A app batch`
    import commands.produce  # noqa: F401 - defining the command registers `faust -A app produce`
    from agents import diagnostics, monitor
    from agents.pipeline import Pipeline
    from ops.metrics import PipelineMetrics
    from sinks.outputs import Outputs
    from web import dashboard, views
    from web.admission import Admission

    check_version()
    refuse_leftover_commands()
    # The worker's -p/-h flags set faust's canonical_url late and warn about it; they are refused anyway.
    warnings.filterwarnings("ignore", category=AlreadyConfiguredWarning)
    tune_garbage_collector()
    set_pipeline_log_level(settings.log_level)

    app = PipelineApp(
        settings.app_id,
        env={},  # settings.py is the only reader of the environment
        broker=settings.kafka.broker_urls,  # informational: every Kafka client is the pipeline's own (kafka_io/)
        datadir=str(settings.state_dir),
        topic_partitions=settings.kafka.topic_partitions,
        topic_replication_factor=settings.kafka.topic_replication,
        web_bind=settings.web.bind,
        web_port=settings.web.port,
        web_host=settings.web.host,
        # faust's own /router and /table endpoints (and its debug pages) expose table contents and the
        # cluster layout without authentication; the pipeline's routing does not use them.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_graph_enabled=False,
        web_stats_enabled=False,
        web_metrics_enabled=False,
        origin="app",
        Worker=QuietWorker,
    )
    app.settings = settings
    app.stats = PipelineStats()
    app.metrics = PipelineMetrics()
    app.outputs = Outputs(settings, app.stats, app.metrics)
    app.pipeline = Pipeline(settings, stats=app.stats, metrics=app.metrics, outputs=app.outputs,
                            url=str(app.conf.canonical_url))
    app.observer = monitor.register(app)
    app.admission = Admission(settings.web.rate_limit)
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
    live.archive_buffered = lambda: sum(stats.archive_buffered.values())
    live.watermarks_ms = lambda: partition_watermarks(app, time.time_ns() // 1_000_000)
    live.low_frontier_ms = lambda: stats.low_frontier_ms
    live.watermark_age_s = lambda: (None if stats.low_frontier_advanced_at_ms is None
                                    else max(0.0, time.time() - stats.low_frontier_advanced_at_ms / 1000))
    live.lag = lambda: app.observer.state.lag
    live.state_bytes = lambda: app.observer.state.state_bytes
    live.ready = lambda: not not_ready_reasons(app)
    live.active_alerts = app.pipeline.export.active_alerts
    live.batch_status = lambda: app.observer.state.batch_status
    app.metrics.declare_rules((rule.name, rule.severity) for rule in app.settings.pipeline.alert_rules)


# Top-level packages and modules of the pipeline: their loggers follow LOG_LEVEL, while
# faust's own loggers follow `faust worker -l`.
PIPELINE_LOGGERS = ("agents", "aggregations", "alerts", "app", "batch", "commands", "formats", "kafka_io", "ops",
                    "settings", "sinks", "tables", "web")


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
    # faust's `faust -A app` (its console script, not `python -m faust`) imports this module with the working
    # directory on sys.path for that import only: the app's own packages, imported next, are found beside it.
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.append(here)
    if "--help" in sys.argv[1:]:
        # Help must work whatever the environment says: build it from the defaults if need be.
        try:
            settings = load(os.environ)
        except SettingsError:
            settings = load({})
    else:
        settings = load_or_exit(os.environ)
    try:
        return create_app(settings)
    except RuntimeError as exc:  # an untested faust version (faust_compat)
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def main() -> None:
    """`events-pipeline ARGS...` (the console script): faust's command line with this app, as
    `faust -A app ARGS...`."""
    from faust.cli.faust import cli

    # faust looks for -A in sys.argv itself (to import the app, whose commands it lists), not only in
    # the arguments click parses.
    sys.argv[1:1] = ["-A", "app"]
    cli(prog_name="events-pipeline")


def __getattr__(name: str) -> PipelineApp:
    if name == "app":
        return _default_app()
    raise AttributeError(name)
