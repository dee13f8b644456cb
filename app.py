"""The Faust application, built from settings.

`faust -A app worker` looks up the `app` attribute of this module; it is created on first
access (module `__getattr__`), so importing this module has no side effects and tests build
their own app with `create_app(settings)`.
"""

from __future__ import annotations

import gc
import os
import ssl
from functools import cache
from typing import TYPE_CHECKING

import faust

from agents.stats import PipelineStats
from settings import KafkaSettings, Settings, load_or_exit

if TYPE_CHECKING:
    from outputs import Outputs


# Records buffered per input stream before faust pauses fetching: the bound on memory
# when the agent falls behind (65,536 cost a quarter of the throughput in research runs).
STREAM_BUFFER_MAXSIZE = 200_000


class PipelineApp(faust.App):
    """A faust.App that carries its typed settings and the pipeline's shared state."""

    settings: Settings
    stats: PipelineStats
    outputs: Outputs


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
    from agents import export, ingest
    from channels import declare
    from outputs import Outputs
    from web import views

    faust_patches.install()
    tune_garbage_collector()

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
    app.outputs = Outputs(settings, app.stats)
    channels = declare(app)
    ingest.register(app, channels)
    export.register(app, channels)
    views.register(app)
    diagnostics.register(app)
    return app


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
