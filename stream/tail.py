"""Reading partitions to their real end, and the last records of output topics.

The end of a partition is taken from the high watermark of fetch responses, not from
ListOffsets: Tansu (0.6.0) answers ListOffsets with the base offset of the last record
batch + 1, short of the real end when that batch holds several records, while its fetch
responses carry the right high watermark. A read is over once the position reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from models import Headers, source_offset

FETCH_MAX_WAIT_MS = 100
# A read of a quiet partition ends within a few fetches; past this, something is wrong with
# the broker, and going on could miss records (a restore would start from a stale state).
READ_DEADLINE_S = 120.0


class TailReadError(RuntimeError):
    """A partition could not be read to its end in time."""


def reader(options: Mapping[str, Any]) -> AIOKafkaConsumer:
    """A consumer without a group, for reads of assigned partitions."""
    return AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                            auto_offset_reset="earliest", **options)


Records = AsyncIterator[tuple[TopicPartition, list[ConsumerRecord]]]


async def read_to_end(consumer: AIOKafkaConsumer, starts: Mapping[TopicPartition, int | None], *,
                      deadline_s: float = READ_DEADLINE_S) -> Records:
    """Yield the records of each partition from its start (None: the beginning) to its real end."""
    if not starts:
        return
    consumer.assign(list(starts))
    for tp, start in starts.items():
        if start is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, start)
    pending = set(starts)
    clock = asyncio.get_running_loop().time
    give_up_at = clock() + deadline_s
    while pending:
        batches = await consumer.getmany(*pending, timeout_ms=4 * FETCH_MAX_WAIT_MS)
        for tp, records in batches.items():
            if records:
                yield tp, records
        for tp in list(pending):
            highwater = consumer.highwater(tp)
            if highwater is not None and await consumer.position(tp) >= highwater:
                pending.discard(tp)
        if pending and clock() > give_up_at:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            raise TailReadError(f"could not read {names} to the end within {deadline_s:.0f}s")


async def last_records(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> Records:
    """The records of each partition's last batch onwards (all of them where ListOffsets is exact)."""
    tps = list(tps)
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    async for item in read_to_end(consumer, {tp: max(ends[tp] - 1, 0) for tp in tps}):
        yield item


async def last_source_offsets(consumer: AIOKafkaConsumer, topic: str, partitions: Iterable[int], *,
                              position: Callable[[Headers], int | None] = source_offset) -> dict[int, int]:
    """Source offset of the last record in each partition of an output topic (-1 where there is none).

    Dead-letter and late records go to the partition of their source record and carry its
    offset in a header, so the last one says which source offsets already have their output:
    the output topic is its own ledger, as in Kafka Connect's exactly-once sinks. Alerts carry
    their sequence number instead (`position=models.alert_seq`).
    """
    found = dict.fromkeys(partitions, -1)
    async for tp, records in last_records(consumer, [TopicPartition(topic, p) for p in found]):
        for record in records:
            offset = position([(name, bytes(value)) for name, value in record.headers])
            if offset is not None:
                found[tp.partition] = max(found[tp.partition], offset)
    return found
