"""The per-partition state store (tables/store.py) on the real broker: writes reach the local
RocksDB only once the changelog has them, a restore reads the local state and then the changelog
after its checkpoint, and a local state the changelog does not back is rebuilt from it."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from aiokafka import AIOKafkaProducer
from helpers import create_topics

from devstack.stack import Endpoints
from tables.changelog import reader
from tables.store import PartitionStore


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
        async def send(topic: str, key: bytes, value: bytes | None, partition: int) -> asyncio.Future:  # type: ignore[type-arg]
            return await self.producer.send(topic, value, key=key, partition=partition)
        return PartitionStore(self.path, self.topic, partition, send)


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
            fresh = PartitionStore(tmp_path / "b", topic, 1, again._send)
            assert await fresh.restore(h.reader) == want
            fresh.close()
            # A changelog that does not back the local state (the topic was recreated): rebuilt.
            other = PartitionStore(tmp_path / "a", topic, 0, again._send)
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
