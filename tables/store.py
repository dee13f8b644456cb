"""Durable per-partition state: one changelog partition, materialized in a local RocksDB.

Each stage keeps the whole state of one of its input partitions in one partition of one
changelog topic, written in order by the partition's single owner. A restored state is
therefore the state after some prefix of its writes: consistent by construction, with
no second topic whose restored prefix could disagree with it (NOTES.md).

Writes go to the changelog first, through the partition's writer (kafka_io.clients.PartitionWriter),
which carries every other record the partition writes too. They reach the local RocksDB only once
the broker has them and the writer has committed them (with transactions: once readers can see
them; an aborted write is in the log but never read), together with the changelog offset they
reached (the checkpoint), in one atomic write batch: the local database always holds exactly a
prefix of the changelog as its readers see it, never a write that the broker may have lost. Restoring reads the local
database, then the changelog after its checkpoint to the real end. The WAL is off: after
a crash RocksDB comes back at an earlier flushed write batch, checkpoint included, and
the changelog fills in the rest.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError
from aiokafka.structs import RecordMetadata
from rocksdict import Options, Rdict, WriteBatch, WriteBufferManager, WriteOptions

from tables.changelog import changes_of, read_to_end

log = logging.getLogger(__name__)

# Sort before every state key: the changelog offset the local database holds up to, and when (wall
# clock, ms) it was written.
CHECKPOINT_KEY = b"\x00checkpoint"
CHECKPOINT_AT_KEY = b"\x00checkpoint-at"
# The changelogs are compacted, and compaction drops a deletion (tombstone) delete.retention.ms after it
# is cleaned: a local state that has not read a deletion by then may never see it, and would keep the
# deleted key. The pipeline creates its changelogs with this retention (kafka_io/topics.py), and a local
# state whose checkpoint is older than MAX_LOCAL_AGE_MS is rebuilt from the changelog alone.
CHANGELOG_DELETE_RETENTION_MS = 24 * 3_600_000
MAX_LOCAL_AGE_MS = CHANGELOG_DELETE_RETENTION_MS - 3_600_000

RESTORE_LOG_EVERY_S = 1.0

# The memory of every local database's memtables together, in one process. Each store (one per stage and
# partition a worker owns) would otherwise keep up to two 64 MiB memtables of its own: with the packs a
# worker rewrites at 100,000 keys they fill, and 8 stores held about 420 MiB of a 1,270 MiB worker (NOTES.md,
# issue 31). The memtables only ever serve a restart's restore, so flushing them sooner costs disk writes, not
# reads. Writers never stall on it (the event loop writes).
MEMTABLE_BUDGET_BYTES: Final = 64 << 20


@functools.cache
def memtables() -> WriteBufferManager:
    """The process's one budget for the stores' memtables (MEMTABLE_BUDGET_BYTES)."""
    return WriteBufferManager(MEMTABLE_BUDGET_BYTES, False)


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def progress_percent(total: int, done: int) -> float:
    """Share of a restore done (100 when there was nothing to do)."""
    if total <= 0:
        return 100.0
    return max(0.0, min(100.0, 100.0 * done / total))


class PartitionWriter(Protocol):
    """Every record one stage partition writes (PartitionStore holds it; kafka_io.clients makes them): `send()` queues a
    record, and `commit()` makes everything sent so far visible to readers at once."""

    transactional: bool  # whether commit() is a transaction's (else each send is durable once acknowledged)

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Sequence[tuple[str, bytes]] | None = None, timestamp_ms: int | None = None
                   ) -> asyncio.Future[RecordMetadata]: ...

    async def commit(self) -> None: ...

    async def close(self) -> None: ...


class StoreError(RuntimeError):
    """The local state cannot be used (another process holds it, or the changelog disagrees)."""


class PartitionStore:
    """The state of one (stage, partition): `restore()` it, then `put()` and `commit()` changes."""

    def __init__(self, path: Path, topic: str, partition: int, writer: PartitionWriter, *,
                 max_local_age_ms: int = MAX_LOCAL_AGE_MS, clock_ms: Callable[[], int] = _wall_ms) -> None:
        self.path = path
        self.tp = TopicPartition(topic, partition)
        self.writer = writer  # every Kafka write of the partition goes through it
        self._max_local_age_ms = max_local_age_ms
        self._clock_ms = clock_ms
        self._db: Rdict | None = None
        self._staged: list[tuple[bytes, bytes | None, asyncio.Future[RecordMetadata]]] = []
        self._committing = asyncio.Lock()
        self._write_options = WriteOptions()
        self._write_options.disable_wal = True
        self.checkpoint = -1  # changelog offset the local database holds up to

    def _open(self) -> Rdict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            options = Options(raw_mode=True)
            options.set_write_buffer_manager(memtables())
            return Rdict(str(self.path), options)
        except Exception as exc:  # rocksdict raises a plain Exception on a held lock
            raise StoreError(f"cannot open the local state {self.path}: {exc} (does another worker use the same "
                             "STATE_DIR?)") from None

    async def restore(self, consumer: AIOKafkaConsumer) -> dict[bytes, bytes]:
        """Every key and value of the partition's state, from the local database and the changelog."""
        db = self._db = self._open()
        raw = db.get(CHECKPOINT_KEY)
        self.checkpoint = int(raw) if raw is not None else -1
        written_at = db.get(CHECKPOINT_AT_KEY)
        if self.checkpoint >= 0 and (written_at is None or
                                     self._clock_ms() - int(written_at) > self._max_local_age_ms):
            self.close()
            return await self._rebuild(consumer, "is older than the changelog keeps its deletions "
                                                 f"({self._max_local_age_ms} ms)")
        restored = 0
        first = self.checkpoint + 1
        clock = asyncio.get_running_loop().time
        log_at = clock() + RESTORE_LOG_EVERY_S
        try:
            async for _, records in read_to_end(consumer, {self.tp: first if first else None}):
                if clock() >= log_at:
                    log_at = clock() + RESTORE_LOG_EVERY_S
                    end = consumer.highwater(self.tp) or 0
                    log.info("restoring %s[%d]: %.0f%% (%d of %d changelog records)", self.tp.topic,
                             self.tp.partition, progress_percent(end - first, records[-1].offset + 1 - first),
                             records[-1].offset + 1 - first, end - first)
                batch = WriteBatch(raw_mode=True)
                changes = changes_of(records)
                for key, value in changes:
                    if value is None:
                        batch.delete(key)
                    else:
                        batch.put(key, value)
                restored += len(changes)
                batch.put(CHECKPOINT_KEY, str(records[-1].offset).encode())
                batch.put(CHECKPOINT_AT_KEY, str(self._clock_ms()).encode())
                db.write(batch, self._write_options)
                self.checkpoint = records[-1].offset
        except OffsetOutOfRangeError:
            # Kafka refuses a read from past the end (or before the start) of the log: the local state's
            # checkpoint is not an offset of this changelog (the topic was recreated or truncated).
            self.close()
            return await self._rebuild(consumer, "is not an offset of the changelog")
        except BaseException:
            self.close()
            raise
        highwater = consumer.highwater(self.tp)
        if highwater is not None and self.checkpoint >= highwater:
            # Tansu answers a read from past the end with nothing and the end offset.
            self.close()
            return await self._rebuild(consumer, f"is past the changelog's end {highwater}")
        if restored:
            log.info("%s[%d]: %d changelog records restored", self.tp.topic, self.tp.partition, restored)
        return {key: value for key, value in db.items() if key not in (CHECKPOINT_KEY, CHECKPOINT_AT_KEY)}

    async def _rebuild(self, consumer: AIOKafkaConsumer, why: str) -> dict[bytes, bytes]:
        """The local state cannot be trusted (the topic was recreated: a broker with memory storage
        restarted, or the topic was deleted): start over from the changelog alone."""
        log.warning("%s: local state at changelog offset %d %s; rebuilding it from the changelog", self.path,
                    self.checkpoint, why)
        shutil.rmtree(self.path, ignore_errors=True)
        if self.checkpoint < 0:
            raise StoreError(f"{self.tp.topic}[{self.tp.partition}] cannot be read from its start")
        return await self.restore(consumer)

    async def put(self, key: bytes, value: bytes | None) -> None:
        """Write one key (None deletes it); durable once `commit()` returns."""
        future = await self.writer.send(self.tp.topic, value, key=key, partition=self.tp.partition)
        self._staged.append((key, value, future))

    async def commit(self) -> None:
        """Wait until the broker has every write so far, commit everything the partition's writer sent (its
        other topics' records too), then apply the writes locally with their checkpoint.

        The writes stay staged until they are applied: a commit cancelled while it waits (a revocation)
        leaves them to the next one. Taken out before, they were lost to the local database while the
        writer's next commit made them visible, and the next commit's checkpoint then claimed them: a
        restore from that database came back with older values than its changelog (NOTES.md, Real Kafka)."""
        async with self._committing:  # one at a time: each applies the oldest writes, in changelog order
            staged = self._staged
            count = len(staged)
            futures = [future for _, _, future in staged[:count]]
            if futures:
                await asyncio.wait(futures)  # not gather, which cancelled the sends themselves when cancelled
            metadata = [future.result() for future in futures]  # a failed send raises here
            await self.writer.commit()
            if self._db is None or self._staged is not staged or not count:
                return  # closed meanwhile (revoked): the changelog has the writes, the next restore reads them
            batch = WriteBatch(raw_mode=True)
            for key, value, _ in staged[:count]:
                if value is None:
                    batch.delete(key)
                else:
                    batch.put(key, value)
            last = max(m.offset for m in metadata)
            batch.put(CHECKPOINT_KEY, str(last).encode())
            batch.put(CHECKPOINT_AT_KEY, str(self._clock_ms()).encode())
            self._db.write(batch, self._write_options)
            self.checkpoint = last
            del staged[:count]  # sends made while it waited stay for the next commit

    async def durable(self) -> None:
        """Make everything written so far durable before anything written after it can be read: without
        transactions, commit(); with them nothing to wait for, since later writes are in the same transaction
        (read whole or not at all) or a later one, and a commit() at the end of the unit of work makes it
        visible. The stages call this where order matters and commit() where a unit of work ends."""
        if not self.writer.transactional:
            await self.commit()

    @property
    def pending(self) -> int:
        return len(self._staged)

    def close(self) -> None:
        """Release the local database; writes not committed are dropped here (the changelog may have them)."""
        self._staged = []
        db, self._db = self._db, None
        if db is not None:
            db.close()


class Writers(Protocol):
    async def writer(self, owner: str) -> PartitionWriter: ...  # kafka_io.clients.Producer.writer


async def open_writers(writers: Writers, prefix: str, partitions: Sequence[int]) -> dict[int, PartitionWriter]:
    """The writer of each partition, owner `<prefix>-<partition>`, started together (with transactions each
    start is a round trip to the coordinator, which fences the partition's previous owner)."""
    opened = await asyncio.gather(*(writers.writer(f"{prefix}-{p}") for p in partitions), return_exceptions=True)
    failed = [result for result in opened if isinstance(result, BaseException)]
    if failed:
        for result in opened:
            if not isinstance(result, BaseException):
                await result.close()
        raise failed[0]
    return dict(zip(partitions, opened, strict=True))  # type: ignore[arg-type]


async def close_stores(stores: Iterable[PartitionStore]) -> None:
    """Release each store's local database and stop its writer (what it sent and did not commit is aborted)."""
    for store in stores:
        store.close()
        await store.writer.close()
