"""PartitionStore.commit (tables/store.py) in-process, over a writer whose acknowledgements the test
gives: a commit cancelled while it waits (a revocation) loses none of its writes to the local
database, so that the next commit's checkpoint never claims writes the database lacks."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition

from tables.store import MEMTABLE_BUDGET_BYTES, PartitionStore, memtables

TOPIC = "ingest-state"


class HeldWriter:
    """A transactional PartitionWriter whose sends are acknowledged when the test says, in send order,
    with consecutive offsets; commit() counts (what it commits is everything sent)."""

    transactional = True

    def __init__(self) -> None:
        self.offsets = 0
        self.unacknowledged: list[tuple[asyncio.Future[Any], int]] = []
        self.commits = 0

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None, timestamp_ms: int | None = None) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.unacknowledged.append((future, self.offsets))
        self.offsets += 1
        return future

    def acknowledge(self) -> None:
        for future, offset in self.unacknowledged:
            future.set_result(SimpleNamespace(offset=offset))
        self.unacknowledged = []

    async def commit(self) -> None:
        self.commits += 1

    async def close(self) -> None:
        return None


class ChangelogEnd:
    """A reader of a changelog holding nothing after `end` (every restore here is of the local database)."""

    def __init__(self, end: int) -> None:
        self.end = end
        self.positions: dict[TopicPartition, int] = {}

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.positions = dict.fromkeys(partitions, 0)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.positions[tp] = 0

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0) -> dict[TopicPartition, list[Any]]:
        return {}

    async def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]

    def last_stable_offset(self, tp: TopicPartition) -> int:
        return self.end

    def highwater(self, tp: TopicPartition) -> int:
        return self.end


async def _opened(path: Path) -> tuple[HeldWriter, PartitionStore]:
    """A store with no local state yet, over a changelog that holds nothing, and its writer."""
    writer = HeldWriter()
    store = PartitionStore(path, TOPIC, 0, writer)
    await store.restore(ChangelogEnd(0))  # type: ignore[arg-type]
    return writer, store


async def _restored(path: Path, end: int) -> tuple[dict[bytes, bytes], int]:
    store = PartitionStore(path, TOPIC, 0, HeldWriter())
    items = await store.restore(ChangelogEnd(end))  # type: ignore[arg-type]
    store.close()
    return items, store.checkpoint


def test_a_commit_cancelled_while_it_waits_leaves_its_writes_to_the_next_commit(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[bytes, bytes], int]:
        writer, store = await _opened(tmp_path / "state")
        await store.put(b"pack-1", b"new")
        await store.put(b"pack-2", b"new")
        commit = asyncio.ensure_future(store.commit())
        await asyncio.sleep(0)  # waiting for the broker's acknowledgements
        commit.cancel()  # the revocation
        await asyncio.gather(commit, return_exceptions=True)
        assert store.pending == 2, "the cancelled commit's writes are still staged"
        await store.put(b"position", b"past both packs")
        writer.acknowledge()
        await store.commit()  # the writer commits all three: the local database must hold all three
        assert store.pending == 0
        store.close()
        return await _restored(tmp_path / "state", writer.offsets)

    items, checkpoint = asyncio.run(scenario())
    assert items == {b"pack-1": b"new", b"pack-2": b"new", b"position": b"past both packs"}
    assert checkpoint == 2


def test_writes_staged_while_a_commit_waits_go_to_the_next_commit(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[bytes, bytes], int, int]:
        writer, store = await _opened(tmp_path / "state")
        await store.put(b"a", b"1")
        first = asyncio.ensure_future(store.commit())
        await asyncio.sleep(0)
        await store.put(b"b", b"2")  # sent while the first commit waits
        second = asyncio.ensure_future(store.commit())  # waits for the first: one commit at a time
        writer.acknowledge()
        await first
        applied_first = store.checkpoint
        writer.acknowledge()
        await second
        store.close()
        items, checkpoint = await _restored(tmp_path / "state", writer.offsets)
        return items, applied_first, checkpoint

    items, applied_first, checkpoint = asyncio.run(scenario())
    assert applied_first == 0, "the first commit applies only what was staged when it began"
    assert items == {b"a": b"1", b"b": b"2"}
    assert checkpoint == 1


def test_a_store_closed_while_its_commit_waits_applies_nothing(tmp_path: Path) -> None:
    async def scenario() -> tuple[dict[bytes, bytes], int]:
        writer, store = await _opened(tmp_path / "state")
        await store.put(b"a", b"1")
        commit = asyncio.ensure_future(store.commit())
        await asyncio.sleep(0)
        store.close()  # revoked: the changelog has the write, the next restore reads it from there
        writer.acknowledge()
        await commit
        return await _restored(tmp_path / "state", 0)

    items, checkpoint = asyncio.run(scenario())
    assert items == {}
    assert checkpoint == -1


def test_the_stores_memtables_together_stay_within_one_budget(tmp_path: Path) -> None:
    """Every store of the process shares MEMTABLE_BUDGET_BYTES: 4 stores rewriting 8 budgets' worth of packs
    hold at most the budget in memtables together (each alone would keep up to two 64 MiB memtables)."""
    value = bytes(range(256)) * 64  # 16 KiB, as a pack of a few hundred keys

    async def scenario() -> list[int]:
        stores = [(await _opened(tmp_path / f"state-{n}")) for n in range(4)]
        held = []
        for round_ in range(8 * MEMTABLE_BUDGET_BYTES // len(value) // 4 // 64):
            for writer, store in stores:
                for key in range(64):
                    await store.put(b"pack-%d" % (round_ * 64 + key), value)
                    await store.put(b"pack-%d" % (round_ * 64 + key - 64), None)  # the pack it replaces
                writer.acknowledge()
                await store.commit()
            held.append(sum(store._db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0  # type: ignore[union-attr]
                            for _writer, store in stores))
        for _writer, store in stores:
            store.close()
        return held

    held = asyncio.run(scenario())
    assert sum(held) > 0, "the stores wrote to their memtables"
    assert max(held) <= MEMTABLE_BUDGET_BYTES * 1.1, f"{max(held):,} bytes of memtables"
    assert memtables().get_usage() <= MEMTABLE_BUDGET_BYTES * 1.1
