"""The real broker: produce, consume in a group, commit, and resume from the committed offset."""

from __future__ import annotations

import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from helpers import create_topics

from devstack.stack import Endpoints
from kafka_io.clients import Producer
from settings import load

PARTITIONS = 2
MESSAGES = 40
PROCESSED_FIRST = 15
# A group join on Tansu takes a few seconds; 30 s leaves room on a loaded 2-core machine.
READ_DEADLINE_S = 30.0


def _bootstrap(stack: Endpoints) -> str:
    return stack.broker_url.removeprefix("kafka://")


async def _read(consumer: AIOKafkaConsumer, want: int) -> list:
    records: list = []
    deadline = time.monotonic() + READ_DEADLINE_S
    while len(records) < want:
        assert time.monotonic() < deadline, f"read {len(records)} of {want} records before the deadline"
        batches = await consumer.getmany(timeout_ms=500)
        for batch in batches.values():
            records.extend(batch)
    return records


async def _scenario(bootstrap: str, topic: str, group: str) -> None:
    await create_topics(bootstrap, [topic], PARTITIONS)

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(MESSAGES):
            await producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % PARTITIONS)
        await producer.flush()
    finally:
        await producer.stop()
    sent = {(f"k{i}", f"v{i}") for i in range(MESSAGES)}

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False, auto_offset_reset="earliest")

    first = consumer()
    await first.start()
    try:
        processed = (await _read(first, PROCESSED_FIRST))[:PROCESSED_FIRST]
        committed = {}
        for record in processed:
            tp = TopicPartition(record.topic, record.partition)
            committed[tp] = max(committed.get(tp, 0), record.offset + 1)
        await first.commit(committed)
    finally:
        await first.stop()

    second = consumer()
    await second.start()
    try:
        rest = await _read(second, MESSAGES - PROCESSED_FIRST)
        for tp, offset in committed.items():
            assert await second.committed(tp) == offset
    finally:
        await second.stop()

    # Resumed exactly where the commit left off: nothing re-read, nothing skipped.
    for tp, offset in committed.items():
        assert min(r.offset for r in rest if r.partition == tp.partition) == offset
    as_pairs = [(r.key.decode(), r.value.decode()) for r in processed + rest]
    assert len(as_pairs) == MESSAGES
    assert set(as_pairs) == sent


def test_group_commit_and_resume(stack: Endpoints, unique_name: str) -> None:
    asyncio.run(_scenario(_bootstrap(stack), unique_name, f"{unique_name}-group"))


def test_the_workers_producer_is_idempotent_where_the_broker_allows_it(stack: Endpoints, unique_name: str) -> None:
    """KAFKA_IDEMPOTENCE: on Kafka the worker's producer gets a producer id (InitProducerId) and writes
    with it; the embedded stack turns it off for Tansu, which refuses InitProducerId."""
    settings = load({**stack.env(), "TOPIC_EVENTS": unique_name})
    assert settings.kafka.idempotence == (stack.broker_settings.get("KAFKA_IDEMPOTENCE") != "false")

    async def go() -> tuple[int, list[bytes]]:
        await create_topics(_bootstrap(stack), [unique_name], 1)
        producer = Producer(settings.kafka, max_value_bytes=1024)
        await producer.start()
        try:
            for i in range(3):
                await (await producer.send(unique_name, b"v%d" % i, partition=0))
            manager = producer._producer._txn_manager if producer._producer else None  # noqa: SLF001
            producer_id = manager.producer_id if manager is not None else -1
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(stack), auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([TopicPartition(unique_name, 0)])
            return producer_id, [r.value for r in await _read(consumer, 3)]
        finally:
            await consumer.stop()

    producer_id, values = asyncio.run(go())
    assert values == [b"v0", b"v1", b"v2"]
    assert (producer_id >= 0) == settings.kafka.idempotence
