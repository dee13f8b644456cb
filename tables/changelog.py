"""Reading partitions to their real end, and a stage's changelog into its items: the one reader that
every restore goes through (tables/store.py for the stages, batch/stage2.py, the in-memory fakes).

Every reader is read_committed: a transaction's records (kafka_io.clients.TransactionalWriter) are
read once committed and never if aborted. The end of a partition is taken from fetch responses, not
from ListOffsets: their last stable offset (the first offset of a transaction still open: a read
could not pass it, and need not wait for it, since what it holds is not committed yet), or where a
broker gives none, their high watermark. Tansu (0.6.0) answers ListOffsets with the base offset of
the last record batch + 1, short of the real end when that batch holds several records, while its
fetch responses carry the right high watermark. A read is over once the position reaches the end.

A changelog record without a key is not state (skipped); one without a value deletes its key
(formats/state.py lays out the keys and values).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, MutableMapping
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

__all__ = ["ISOLATION_LEVEL", "Change", "TailReadError", "apply_changes", "changes_of", "end_of", "read_items",
           "read_to_end", "reader"]

FETCH_MAX_WAIT_MS = 100
# A read of a quiet partition ends within a few fetches; past this, something is wrong with
# the broker, and going on could miss records (a restore would start from a stale state).
READ_DEADLINE_S = 120.0


class TailReadError(RuntimeError):
    """A partition could not be read to its end in time."""


def reader(options: Mapping[str, Any]) -> AIOKafkaConsumer:
    """A consumer without a group, for reads of assigned partitions. A read from an offset the log does
    not have raises OffsetOutOfRangeError (``auto_offset_reset="none"``) rather than silently starting
    over from the beginning (Kafka's reset): a restore must know its position was not in the log."""
    return AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                            auto_offset_reset="none", isolation_level=ISOLATION_LEVEL, **options)


# Every consumer of the pipeline (the stages' too: agents/runner.py) reads committed records only.
ISOLATION_LEVEL = "read_committed"


def end_of(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int | None:
    """Where a read of `tp` ends as of the last fetch response (see the module doc); None before one."""
    stable = consumer.last_stable_offset(tp)
    if stable is not None and stable >= 0:
        return stable
    return consumer.highwater(tp)


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
        # A fetch answers within FETCH_MAX_WAIT_MS: waiting longer for records that are not there made
        # each empty read (a restore from a local state that is up to date) cost 0.4 s.
        batches = await consumer.getmany(*pending, timeout_ms=FETCH_MAX_WAIT_MS)
        for tp, records in batches.items():
            if records:
                yield tp, records
        for tp in list(pending):
            end = end_of(consumer, tp)
            if end is not None and await consumer.position(tp) >= end:
                pending.discard(tp)
        if pending and clock() > give_up_at:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(pending))
            raise TailReadError(f"could not read {names} to the end within {deadline_s:.0f}s")


Change = tuple[bytes, bytes | None]  # a changelog record: key, and value (None: deleted)


class KeyedRecord(Protocol):
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def changes_of(records: Iterable[KeyedRecord]) -> list[Change]:
    """The state changes among changelog records (keyless records are not state)."""
    return [(record.key, record.value) for record in records if record.key is not None]


def apply_changes(items: MutableMapping[bytes, bytes], changes: Iterable[Change]) -> None:
    """Apply changes in order to a partition's items: the newest value of each key, deletes removed."""
    for key, value in changes:
        if value is None:
            items.pop(key, None)
        else:
            items[key] = value


async def read_items(consumer: AIOKafkaConsumer, topic: str,
                     partitions: Iterable[int]) -> dict[int, dict[bytes, bytes]]:
    """Each partition's items, read from the beginning of the changelog to its end (groupless, read-only).
    A real Kafka compacts the changelogs, so this reads about one record per key."""
    items: dict[int, dict[bytes, bytes]] = {p: {} for p in partitions}
    async for tp, records in read_to_end(consumer, {TopicPartition(topic, p): None for p in items}):
        apply_changes(items[tp.partition], changes_of(records))
    return items
