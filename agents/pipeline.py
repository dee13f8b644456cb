"""The worker's pipeline: its clients and stages, started and stopped in order (a mode Service).

Start: the store clients, the topics (created if missing, their layout checked), the
producer, the watermark board, then both stages at once (a consumer's start waits for its
group's first assignment, which the broker delays by seconds: one after the other, a start
would pay that twice). Stop: stage 1, then stage 2 and the rest in reverse, each stage
closing its partitions (writing what it can) and leaving its group before the producer
is flushed and closed. faust's worker runs this service beside its web server.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from mode import Service

from agents.export import ExportContext, ExportStage
from agents.ingest import IngestContext, IngestStage
from agents.runner import StageRunner, exit_process, exit_with_line
from agents.watermarks import WatermarkBoard
from formats.side_outputs import MAX_FORWARDED_BYTES
from kafka_io.clients import BrokerAccessError, Producer, check_access, client_options
from kafka_io.topics import TopicLayoutError, Topics, ensure_topics, topic_specs, topics_for
from ops.faults import Faults
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import Settings
from sinks.outputs import Outputs
from sinks.startup import StoreAccessError, check_stores, time_left_s

log = logging.getLogger(__name__)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Pipeline(Service):
    def __init__(self, settings: Settings, *, stats: PipelineStats, metrics: PipelineMetrics, outputs: Outputs,
                 url: str) -> None:
        super().__init__()
        self.settings = settings
        self.topics: Topics = topics_for(settings)
        self.stats = stats
        self.metrics = metrics
        self.outputs = outputs
        kafka = settings.kafka
        self._options: dict[str, Any] = client_options(kafka)
        self.producer = Producer(kafka, max_value_bytes=max(MAX_FORWARDED_BYTES, settings.pipeline.max_event_bytes))
        self.board = WatermarkBoard(self._options, self.topics.watermarks, kafka.topic_partitions)
        state_dir = Path(settings.state_dir)
        faults = Faults(dict(settings.pipeline.fault_injection))
        self.ingest = IngestStage(IngestContext(settings, self.topics, self.producer, outputs, self.board, stats,
                                                state_dir, wall_ms, faults))
        self.export = ExportStage(ExportContext(settings, self.topics, self.producer, outputs, stats, metrics,
                                                state_dir, wall_ms, faults))
        partitions = kafka.topic_partitions
        self.ingest_runner = StageRunner(self.ingest, group_id=f"{settings.app_id}-ingest", partitions=partitions,
                                         client_options=self._options, producer=self.producer, url=url)
        self.export_runner = StageRunner(self.export, group_id=f"{settings.app_id}-export", partitions=partitions,
                                         client_options=self._options, producer=self.producer, url=url)

    async def on_start(self) -> None:
        try:
            # The broker and the stores answer, or one line says which setting to fix (STARTUP_TIMEOUT).
            wait_s = self.settings.startup_timeout_ms / 1000
            started = time.monotonic()
            await check_access(self.settings.kafka, wait_s=wait_s)
            await ensure_topics(self._options, topic_specs(self.topics, self.settings.kafka.topic_partitions),
                                self.settings.kafka.topic_replication)
            await self.producer.start()  # the broker's refusals (idempotence, transactions) before the stores'
            await check_stores(self.outputs.lake, self.outputs.redis, wait_s=time_left_s(wait_s, started))
            await self.board.start()
            await asyncio.gather(self.export_runner.start(), self.ingest_runner.start())
        except (TopicLayoutError, BrokerAccessError, StoreAccessError) as exc:
            exit_with_line(f"error: {exc}")
        except Exception as exc:  # noqa: BLE001 - a worker that cannot start must not linger half up
            exit_process(exc)

    async def on_stop(self) -> None:
        # Stage 1 first: its last frontiers and partials still reach stage 2's topic.
        for service in (self.ingest_runner, self.export_runner, self.board):
            try:
                await service.stop()
            except Exception as exc:  # noqa: BLE001 - stop the rest whatever happens
                log.warning("stopping %s failed: %r", service, exc)
        await self.producer.flush()
        await self.producer.stop()
        self.outputs.close()

    @property
    def ready(self) -> bool:
        return self.ingest_runner.ready and self.export_runner.ready
