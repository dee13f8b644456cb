"""Reading where a previous run's dead-letter output stopped (agents/tail.py), on the real broker.

Tansu reports a partition's end as the base offset of its last record batch + 1, so the
records of a multi-record last batch lie beyond it: the read must find them anyway."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer
from helpers import create_topics

from agents.tail import last_source_offsets
from devstack.stack import Endpoints
from models import HEADER_OFFSET
from settings import load

PARTITIONS = 3


async def _produce(bootstrap: str, topic: str) -> None:
    await create_topics(bootstrap, [topic], PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50)
    await producer.start()
    try:
        # Partition 0: two batches, the last of 20 records. Partition 1: a single record,
        # with a source offset lower than an earlier one's (the maximum counts, not the last).
        # Partition 2: empty.
        for batch in (range(0, 30, 3), range(100, 120)):
            for source in batch:
                await producer.send(topic, b"x", partition=0, headers=[(HEADER_OFFSET, str(source).encode())])
            await producer.flush()
        for source in (7, 5):
            await producer.send(topic, b"y", partition=1, headers=[(HEADER_OFFSET, str(source).encode())])
        await producer.flush()
    finally:
        await producer.stop()


def test_last_source_offsets_reads_past_the_reported_end(stack: Endpoints, unique_name: str) -> None:
    topic = f"{unique_name}-dlq"
    asyncio.run(_produce(stack.broker_url.removeprefix("kafka://"), topic))
    kafka = load({"BROKER_URL": stack.broker_url}).kafka
    found = asyncio.run(last_source_offsets(kafka, topic, range(PARTITIONS)))
    assert found == {0: 119, 1: 7, 2: -1}
