"""The per-partition state store (tables/store.py) on the real broker: writes reach the local
RocksDB only once the changelog has them, a restore reads the local state and then the changelog
after its checkpoint, and a local state the changelog does not back is rebuilt from it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ProducerFenced
from helpers import create_topics

from devstack.stack import Endpoints
from kafka_io.clients import Producer
from kafka_io.topics import CHANGELOG_CONFIGS
from settings import load
from tables.changelog import read_to_end, reader
from tables.store import PartitionStore, close_stores

COMPACTION_DEADLINE_S = 60.0  # the cleaner looks every second (devstack's log.cleaner.backoff.ms)


class _Harness:
    def __init__(self, bootstrap: str, topic: str, path: Path) -> None:
        self.bootstrap, self.topic, self.path = bootstrap, topic, path

    async def __aenter__(self) -> _Harness:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()
        self.reader = reader({"bootstrap_servers": self.bootstrap})
        await self.reader.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()
        await self.reader.stop()

    def store(self, partition: int = 1) -> PartitionStore:
        return PartitionStore(self.path, self.topic, partition, _Writer(self.producer))


class _Writer:
    """A plain producer as a partition's writer (kafka_io.clients.Producer without transactions)."""

    transactional = False

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None, timestamp_ms: int | None = None) -> asyncio.Future:  # type: ignore[type-arg]
        return await self.producer.send(topic, value, key=key, partition=partition)

    async def commit(self) -> None:
        return None

    async def close(self) -> None:
        return None


def test_restore_from_the_changelog_and_from_the_local_state(stack: Endpoints, unique_name: str,
                                                               tmp_path: Path) -> None:
    bootstrap = stack.broker_url.removeprefix("kafka://")
    topic = f"{unique_name}-state"

    async def go() -> None:
        await create_topics(bootstrap, [topic], 2)
        async with _Harness(bootstrap, topic, tmp_path / "a") as h:
            store = h.store()
            assert await store.restore(h.reader) == {}
            for i in range(50):
                await store.put(b"k%d" % (i % 7), b"v%d" % i)
            await store.put(b"k3", None)
            await store.commit()
            await store.put(b"uncommitted", b"x")  # sent, never committed: only the changelog has it
            await h.producer.flush()
            store.close()
            want = {b"k%d" % (i % 7): b"v%d" % i for i in range(50)} | {b"uncommitted": b"x"}
            del want[b"k3"]
            # The same directory: local state up to its checkpoint, then the changelog's tail.
            again = h.store()
            assert await again.restore(h.reader) == want
            again.close()
            # Another machine: everything from the changelog.
            fresh = PartitionStore(tmp_path / "b", topic, 1, again.writer)
            assert await fresh.restore(h.reader) == want
            fresh.close()
            # A changelog that does not back the local state (the topic was recreated): rebuilt.
            other = PartitionStore(tmp_path / "a", topic, 0, again.writer)
            assert await other.restore(h.reader) == {}
            other.close()

    asyncio.run(go())


def test_a_local_state_ahead_of_its_changelog_is_rebuilt(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    bootstrap = stack.broker_url.removeprefix("kafka://")
    old, new = f"{unique_name}-old", f"{unique_name}-new"

    async def go() -> None:
        await create_topics(bootstrap, [old, new], 2)
        async with _Harness(bootstrap, old, tmp_path / "old") as h:
            store = h.store()
            await store.restore(h.reader)
            for i in range(10):
                await store.put(b"k%d" % i, b"v")
            await store.commit()
            store.close()
        shutil.copytree(tmp_path / "old", tmp_path / "new")
        async with _Harness(bootstrap, new, tmp_path / "new") as h:
            store = h.store()
            await store.put(b"only", b"this")  # the new topic holds one record
            await h.producer.flush()
            assert await store.restore(h.reader) == {b"only": b"this"}
            store.close()

    asyncio.run(go())


def test_a_restore_over_a_compacted_changelog_is_exact(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    """Kafka compacts the changelogs: a restore from no local state reads about one record per key, and a
    local state older than the changelog keeps its deletions is rebuilt, since the deletions it missed may
    be gone (here delete.retention.ms is 100 ms and segments roll every 100 ms, so that the cleaner drops
    the deleted keys' records and then their tombstones within seconds)."""
    if stack.broker != "kafka":
        pytest.skip(f"{stack.broker} does not compact")
    bootstrap = stack.broker_url.removeprefix("kafka://")
    topic = f"{unique_name}-state"
    configs = {**CHANGELOG_CONFIGS, "segment.ms": "100", "min.cleanable.dirty.ratio": "0.01",
               "delete.retention.ms": "100"}
    deleted = {b"k%d" % k for k in range(5)}

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1, topic_configs=configs)])
        finally:
            await admin.close()
        async with _Harness(bootstrap, topic, tmp_path / "live") as h:
            store = PartitionStore(h.path, topic, 0, h.store().writer)
            assert await store.restore(h.reader) == {}
            want: dict[bytes, bytes] = {}
            written = 0
            for round_ in range(12):
                for k in range(30):
                    await store.put(b"k%d" % k, b"r%d" % round_)
                    want[b"k%d" % k] = b"r%d" % round_
                written += 30
                if round_ == 11:
                    for key in deleted:
                        await store.put(key, None)
                        del want[key]
                    written += len(deleted)
                await store.commit()
                if round_ == 5:  # a local state from before the deletions, copied while closed
                    store.close()
                    for name in ("stale", "stale-kept"):
                        shutil.copytree(tmp_path / "live", tmp_path / name)
                    store = PartitionStore(h.path, topic, 0, h.store().writer)
                    assert await store.restore(h.reader) == want
                await asyncio.sleep(0.15)  # the next write rolls the segment

            async def compacted() -> list[tuple[bytes, bytes | None]]:
                # More writes keep the log dirty and roll segments, so the cleaner runs again and drops
                # the tombstones once they are older than delete.retention.ms.
                await store.put(b"filler", b"%d" % len(want))
                want[b"filler"] = b"%d" % len(want)
                await store.commit()
                items: list[tuple[bytes, bytes | None]] = []
                async for _, records in read_to_end(h.reader, {TopicPartition(topic, 0): None}):
                    items.extend((r.key, r.value) for r in records)
                return items

            deadline = asyncio.get_running_loop().time() + COMPACTION_DEADLINE_S
            while True:
                items = await compacted()
                if not deleted & {key for key, _ in items} and len(items) < written / 3:
                    break
                assert asyncio.get_running_loop().time() < deadline, \
                    f"the changelog was not compacted within {COMPACTION_DEADLINE_S} s: {len(items)} records"
                await asyncio.sleep(1)
            store.close()

            fresh = PartitionStore(tmp_path / "fresh", topic, 0, h.store().writer)
            assert await fresh.restore(h.reader) == want
            fresh.close()
            # The hazard the age rule is for: a local state that missed the deletions keeps the deleted keys.
            kept = PartitionStore(tmp_path / "stale-kept", topic, 0, h.store().writer, max_local_age_ms=10**12)
            assert set(await kept.restore(h.reader)) == set(want) | deleted
            kept.close()
            stale = PartitionStore(tmp_path / "stale", topic, 0, h.store().writer, max_local_age_ms=0)
            assert await stale.restore(h.reader) == want
            stale.close()

    asyncio.run(go())


def test_a_fenced_writer_leaves_its_successor_exactly_what_it_committed(stack: Endpoints, unique_name: str,
                                                                         tmp_path: Path) -> None:
    """KAFKA_TRANSACTIONS: a partition's next owner starts its writer (same transactional id) before it
    restores; from then on the previous owner's writes, sent or not, committed or not, reach no reader, and
    its next send or commit raises ProducerFenced. What it committed before is restored, and nothing else."""
    if stack.broker != "kafka":
        pytest.skip("Tansu has no transactions (docs/development.md, Brokers)")
    bootstrap = stack.broker_url.removeprefix("kafka://")
    topic, other = f"{unique_name}-state", f"{unique_name}-out"
    settings = load({**stack.env(), "APP_ID": unique_name})
    assert settings.kafka.transactions

    async def go() -> None:
        await create_topics(bootstrap, [topic, other], 1)
        producer = Producer(settings.kafka, max_value_bytes=1024)
        reader_ = reader({"bootstrap_servers": bootstrap})
        await reader_.start()
        try:
            zombie = PartitionStore(tmp_path / "zombie", topic, 0, await producer.writer(f"{unique_name}-ingest-0"))
            assert await zombie.restore(reader_) == {}
            await zombie.put(b"a", b"1")
            await zombie.writer.send(other, b"side output 1", partition=0)
            await zombie.commit()
            await zombie.put(b"a", b"2")  # sent and acknowledged, never committed
            await zombie.writer.send(other, b"side output 2", partition=0)
            await asyncio.sleep(0)
            # The successor: same owner name, so the same transactional id.
            successor = PartitionStore(tmp_path / "successor", topic, 0,
                                       await producer.writer(f"{unique_name}-ingest-0"))
            assert await successor.restore(reader_) == {b"a": b"1"}
            with pytest.raises(ProducerFenced):
                await zombie.put(b"a", b"3")
                await zombie.commit()
            await successor.put(b"b", b"1")
            await successor.commit()
            fresh = PartitionStore(tmp_path / "fresh", topic, 0, successor.writer)
            assert await fresh.restore(reader_) == {b"a": b"1", b"b": b"1"}
            fresh.close()
            got = [record.value async for _, records in read_to_end(reader_, {TopicPartition(other, 0): None})
                   for record in records]
            assert got == [b"side output 1"]
            await close_stores([zombie, successor])
        finally:
            await reader_.stop()

    asyncio.run(go())
