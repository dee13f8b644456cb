"""Reading partitions to their end (tables/changelog.py), on the real broker, and a read from an offset
the log does not have.

Tansu reports a partition's end (ListOffsets) as the base offset of its last record batch
+ 1, so the records of a multi-record last batch lie beyond it: the reads must find them; Kafka's
ListOffsets is exact."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from helpers import create_topics

from devstack.stack import Endpoints
from formats.side_outputs import HEADER_OFFSET
from kafka_io.tail import last_source_offsets
from tables.changelog import read_to_end, reader

PARTITIONS = 3


async def _produce(bootstrap: str, topic: str) -> None:
    await create_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        # Partition 0: two batches, the last of 20 records. Partition 1: one batch of two records, in
        # source order as the pipeline writes them. Partition 2: empty.
        for batch in (range(0, 30, 3), range(100, 120)):
            for source in batch:
                await producer.send(topic, b"x", partition=0, headers=[(HEADER_OFFSET, str(source).encode())])
            await producer.flush()
        for source in (5, 7):
            await producer.send(topic, b"y", partition=1, headers=[(HEADER_OFFSET, str(source).encode())])
        await producer.flush()
    finally:
        await producer.stop()


async def _read(bootstrap: str, topic: str) -> tuple[dict[int, int], dict[int, list[int]]]:
    consumer = reader({"bootstrap_servers": bootstrap})
    await consumer.start()
    try:
        found = await last_source_offsets(consumer, topic, range(PARTITIONS))
        offsets: dict[int, list[int]] = {p: [] for p in range(PARTITIONS)}
        starts = {TopicPartition(topic, 0): 25, TopicPartition(topic, 1): None, TopicPartition(topic, 2): 0}
        async for tp, records in read_to_end(consumer, starts):
            offsets[tp.partition].extend(r.offset for r in records)
        return found, offsets
    finally:
        await consumer.stop()


def test_reads_go_past_the_reported_end(stack: Endpoints, unique_name: str) -> None:
    topic = f"{unique_name}-dlq"
    bootstrap = stack.broker_url.removeprefix("kafka://")
    asyncio.run(_produce(bootstrap, topic))
    found, offsets = asyncio.run(_read(bootstrap, topic))
    assert found == {0: 119, 1: 7, 2: -1}
    assert offsets == {0: list(range(25, 30)), 1: [0, 1], 2: []}


def test_the_tail_of_a_transactional_log_is_its_last_committed_record(stack: Endpoints, unique_name: str) -> None:
    """A log written with transactions ends with commit markers, and here with an aborted transaction of
    30 records after them: the tail is still the last committed record (kafka_io.tail.last_records)."""
    if stack.broker != "kafka":
        pytest.skip("Tansu has no transactions (README, Brokers)")
    topic = f"{unique_name}-dlq"
    bootstrap = stack.broker_url.removeprefix("kafka://")

    async def go() -> dict[int, int]:
        await create_topics(bootstrap, [topic], PARTITIONS)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=unique_name)
        await producer.start()
        try:
            for committed, sources in ((True, range(3)), (True, range(10, 13)), (False, range(20, 50))):
                await producer.begin_transaction()
                for source in sources:
                    await producer.send(topic, b"x", partition=0, headers=[(HEADER_OFFSET, str(source).encode())])
                await (producer.commit_transaction() if committed else producer.abort_transaction())
        finally:
            await producer.stop()
        consumer = reader({"bootstrap_servers": bootstrap})
        await consumer.start()
        try:
            return await last_source_offsets(consumer, topic, range(PARTITIONS))
        finally:
            await consumer.stop()

    assert asyncio.run(go()) == {0: 12, 1: -1, 2: -1}
