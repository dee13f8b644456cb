"""Reading partitions to their end (tables/changelog.py), on the real broker, and a read from an offset
the log does not have.

Tansu reports a partition's end (ListOffsets) as the base offset of its last record batch
+ 1, so the records of a multi-record last batch lie beyond it: the reads must find them; Kafka's
ListOffsets is exact."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from helpers import create_topics

from devstack.stack import Endpoints
from formats.side_outputs import HEADER_OFFSET
from kafka_io.tail import last_records, last_source_offsets
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
        pytest.skip("Tansu has no transactions (docs/development.md, Brokers)")
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


def test_after_the_tail_every_partition_is_followed_from_its_end(stack: Endpoints, unique_name: str) -> None:
    """The watermark board reads the tail, then follows every partition. A partition holding nothing
    committed yet (a killed owner's open transaction, here) and one whose tail needs a second, longer read
    (an aborted transaction of 30 records after its last committed one) must both stay assigned: a follower
    that lost them waited forever for their marks (chaos, seed 27062)."""
    if stack.broker != "kafka":
        pytest.skip("Tansu has no transactions (docs/development.md, Brokers)")
    topic = f"{unique_name}-marks"
    bootstrap = stack.broker_url.removeprefix("kafka://")

    async def go() -> tuple[dict[int, list[bytes]], dict[int, list[bytes]]]:
        await create_topics(bootstrap, [topic], PARTITIONS)
        killed = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{unique_name}-1")
        await killed.start()
        await killed.begin_transaction()
        await (await killed.send(topic, b"open", partition=1))  # partition 1: an open transaction only
        owner = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{unique_name}-0")
        await owner.start()
        for committed, values in ((True, [b"a"]), (False, [b"x"] * 30)):  # partition 0: committed, then aborted
            await owner.begin_transaction()
            for value in values:
                await owner.send(topic, value, partition=0)
            await (owner.commit_transaction() if committed else owner.abort_transaction())
        consumer = reader({"bootstrap_servers": bootstrap})
        await consumer.start()
        try:
            tail: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
            async for tp, records in last_records(consumer, [TopicPartition(topic, p) for p in range(PARTITIONS)]):
                tail[tp.partition] += [r.value for r in records]
            # The killed owner's successor fences it (its open transaction is aborted), and everyone writes on.
            successor = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{unique_name}-1")
            await successor.start()
            for partition, producer in ((1, successor), (0, owner), (2, successor)):
                await producer.begin_transaction()
                await producer.send(topic, b"after %d" % partition, partition=partition)
                await producer.commit_transaction()
            await successor.stop()
            followed: dict[int, list[bytes]] = {p: [] for p in range(PARTITIONS)}
            deadline = asyncio.get_running_loop().time() + 30
            while sum(map(len, followed.values())) < 3 and asyncio.get_running_loop().time() < deadline:
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    followed[tp.partition] += [r.value for r in records]
            return tail, followed
        finally:
            await consumer.stop()
            await owner.stop()
            with contextlib.suppress(Exception):
                await killed.stop()

    tail, followed = asyncio.run(go())
    assert tail == {0: [b"a"], 1: [], 2: []}
    assert followed == {0: [b"after 0"], 1: [b"after 1"], 2: [b"after 2"]}
