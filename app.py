"""The Faust application, built from settings.

`faust -A app worker` looks up the `app` attribute of this module; it is created on first
access (module `__getattr__`), so importing this module has no side effects and tests build
their own app with `create_app(settings)`.
"""

from __future__ import annotations

import os
import ssl
from functools import cache
from typing import TYPE_CHECKING

import faust

from agents.stats import PipelineStats
from settings import KafkaSettings, Settings, load_or_exit

if TYPE_CHECKING:
    from outputs import Outputs


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
    from agents import export, ingest
    from channels import declare
    from outputs import Outputs
    from web import views

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
        # Tansu and small clusters: a first group join otherwise waits out long defaults.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=10.0,
        # Tansu reports a partition's high watermark as the base offset of its last record
        # batch + 1, so a changelog's persisted offset can exceed it after a clean stop;
        # faust's check would then refuse to start. Recovery itself reads whole batches.
        recovery_consistency_check=False,
        origin="app",
    )
    app.settings = settings
    app.stats = PipelineStats()
    app.outputs = Outputs(settings, app.stats)
    channels = declare(app)
    ingest.register(app, channels)
    export.register(app, channels)
    views.register(app)
    return app


@cache
def _default_app() -> PipelineApp:
    return create_app(load_or_exit(os.environ))


def __getattr__(name: str) -> PipelineApp:
    if name == "app":
        return _default_app()
    raise AttributeError(name)
