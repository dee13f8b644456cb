"""The last records of topics: where the dead-letter, late and alert topics stand (their own ledgers),
and the newest watermarks. Reads to a partition's real end are tables/changelog.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from formats.side_outputs import Headers, source_offset
from tables.changelog import Records, read_to_end


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
    their sequence number instead (`position=formats.alerts.alert_seq`).
    """
    found = dict.fromkeys(partitions, -1)
    async for tp, records in last_records(consumer, [TopicPartition(topic, p) for p in found]):
        for record in records:
            offset = position([(name, bytes(value)) for name, value in record.headers])
            if offset is not None:
                found[tp.partition] = max(found[tp.partition], offset)
    return found
