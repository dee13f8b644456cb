"""The ingest agent: consumes the events topic in batches.

At this stage it counts what it consumes per partition; validation, windows and export
build on the same batch loop.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faust import StreamT

    from app import PipelineApp

log = logging.getLogger(__name__)

BATCH_SIZE = 5000
BATCH_WITHIN_S = 0.1
PROGRESS_EVERY_S = 5.0


def register(app: PipelineApp) -> None:
    stats = app.stats
    events = app.topic(app.settings.kafka.topic_events, key_serializer="raw", value_serializer="raw")

    async def ingest(stream: StreamT[bytes]) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_S):
            for event in batch:
                stats.consumed[event.message.partition] += 1

    async def log_progress() -> None:
        total, rate = stats.rate_since_last_call(time.monotonic())
        if rate > 0:
            log.info("consumed %d events (%.0f events/s)", total, rate)

    app.agent(events, name="ingest")(ingest)
    app.timer(PROGRESS_EVERY_S, name="ingest-progress")(log_progress)
