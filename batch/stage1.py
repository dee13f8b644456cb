"""What stage 1 has made durable, read from Kafka: the low watermark and the per-partition positions.

Read-only and groupless (tables/changelog.py's reader): the batch job never joins a stage's group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from batch.sealing import uncovered
from formats.state import POSITION_KEY, IngestPosition, decode_ingest_position
from formats.watermarks import Mark, decode_mark
from kafka_io.tail import last_records
from tables.changelog import changes_of, read_to_end, reader
from tables.watermark import low_watermark

__all__ = ["Stage1Reader", "Stage1View"]

FIRST_SPAN = 1_000  # records read back from a changelog's end to find its last position record


@dataclass(frozen=True, slots=True)
class Stage1View:
    low_watermark_ms: int | None  # None: not every input partition has published one
    fold_next: Mapping[int, int | None]
    archive_next: Mapping[int, int | None]


class Stage1Reader:
    """Reads `watermarks` and `ingest_state` (both with one partition per input partition)."""

    def __init__(self, client_options: Mapping[str, Any], *, watermarks: str, ingest_state: str,
                 partitions: int) -> None:
        self._options = dict(client_options)
        self.watermarks = watermarks
        self.ingest_state = ingest_state
        self.partitions = partitions
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = reader(self._options)
        await self._consumer.start()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    def _require(self) -> AIOKafkaConsumer:
        assert self._consumer is not None, "Stage1Reader is not started"
        return self._consumer

    async def _existing(self, topic: str) -> bool:
        return topic in await self._require().topics()

    async def observe(self) -> Stage1View:
        """The low watermark, then the positions (in this order: see batch/sealing.py)."""
        low = await self.low_watermark()
        positions = await self.positions()
        return Stage1View(low, {p: pos.fold_next for p, pos in positions.items()},
                          {p: pos.archive_next for p, pos in positions.items()})

    async def low_watermark(self) -> int | None:
        if not await self._existing(self.watermarks):
            return None
        marks: dict[int, Mark] = {}
        tps = [TopicPartition(self.watermarks, p) for p in range(self.partitions)]
        async for tp, records in last_records(self._require(), tps):
            for record in records:
                if record.value is not None:
                    marks[tp.partition] = decode_mark(record.value)
        return low_watermark(marks, self.partitions)

    async def positions(self) -> dict[int, IngestPosition]:
        """Each input partition's last position record (a partition without one is left out)."""
        if not await self._existing(self.ingest_state):
            return {}
        found = {}
        for partition in range(self.partitions):
            position = await self._last_position(TopicPartition(self.ingest_state, partition))
            if position is not None:
                found[partition] = position
        return found

    async def _last_position(self, tp: TopicPartition) -> IngestPosition | None:
        consumer = self._require()
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        span = FIRST_SPAN
        while True:
            start = max(end - span, 0)
            last: bytes | None = None
            async for _tp, records in read_to_end(consumer, {tp: start}):
                for key, value in changes_of(records):
                    if key == POSITION_KEY and value is not None:
                        last = value
            if last is not None:
                return decode_ingest_position(last)
            if start == 0:
                return None
            span *= 8  # a frontier's deletes can follow the last position: look further back

    async def wait_for_archive(self, fold_next: Mapping[int, int | None], *, timeout_s: float,
                               poll_s: float = 1.0) -> dict[int, int | None]:
        """Re-read the positions until every partition's archive reaches `fold_next` or the timeout;
        returns the archive positions last read."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + timeout_s
        while True:
            archive_next = {p: pos.archive_next for p, pos in (await self.positions()).items()}
            if not uncovered(fold_next, archive_next) or loop.time() >= give_up_at:
                return archive_next
            await asyncio.sleep(poll_s)
