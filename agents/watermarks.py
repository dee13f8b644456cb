"""Every input partition's watermark, as its owner last published it, on every worker.

Stage 1 judges lateness and closes windows on the low watermark over *all* input
partitions, not over the partitions one worker happens to own: a partition's frontier
must not depend on how partitions are spread over workers. Each partition's owner
publishes the partition's watermark to partition p of the watermarks topic once it is
durable (agents/ingest.py); every worker reads the last record of every partition at
start, then follows the topic. A watermark only rises, so a stale reading is merely low:
windows close a little later, and no on-time event is ever called late.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from mode import Service

from agents.runner import exit_process
from formats.watermarks import Mark, decode_mark
from kafka_io.tail import last_records
from tables.changelog import reader
from tables.watermark import low_watermark

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 200


class WatermarkBoard(Service):
    def __init__(self, client_options: dict[str, Any], topic: str, partitions: int) -> None:
        super().__init__()
        self._options = client_options
        self.topic = topic
        self.partitions = partitions
        self.marks: dict[int, Mark] = {}
        self.changed = asyncio.Event()  # set whenever a mark arrives; stage 1 may tick at once
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    def low(self) -> int | None:
        """The low watermark over all input partitions, or None until every one has been heard from."""
        return low_watermark(self.marks, self.partitions)

    async def on_start(self) -> None:
        self._consumer = reader(self._options)
        await self._consumer.start()
        self._task = asyncio.ensure_future(self._follow())

    async def on_stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def _apply(self, partition: int, raw: bytes | None) -> None:
        if raw is None:
            return
        try:
            mark = decode_mark(raw)
        except (ValueError, KeyError, TypeError):
            log.warning("watermarks: ignoring an unreadable record in partition %d", partition)
            return
        self.marks[partition] = mark
        self.changed.set()

    async def _follow(self) -> None:
        try:
            await self._read()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - crash-only: without marks no window would close
            exit_process(exc)

    async def _read(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        tps = [TopicPartition(self.topic, p) for p in range(self.partitions)]
        async for tp, records in last_records(consumer, tps):
            for record in records:
                self._apply(tp.partition, record.value)
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=POLL_TIMEOUT_MS)
            for tp, records in batches.items():
                for record in records:
                    self._apply(tp.partition, record.value)
