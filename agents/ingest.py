"""Stage 1, the ingest stage: validate, dead-letter, archive and pre-aggregate the events topic.

One `IngestPartition` per owned input partition holds that partition's whole state, and
all of it lives in that partition of one changelog (tables/store.py): the open partial
aggregates, and the position record (where folding and the archive stand, the frontier,
the credited event time). The input resumes where the position says, whatever offsets
were committed. Per batch of records, in offset order:

1. records below `fold_next` were folded before a restart; they are read again only for
   the raw archive;
2. the others are decoded and validated (tables/partials.fold_records): bad ones go to the
   dead-letter topic, records in windows the frontier closed go to the late topic, and
   the rest are folded into their partials, each carrying the highest offset folded in;
3. the dead letters, late records and changed partials are sent, the changed partials
   written to the changelog, and all of it awaited;
4. only then is the position advanced past the batch.

A crash anywhere leaves a changelog prefix: the next owner restores it, resumes at the
stored position, and redoes what the prefix lacks. A partial already holding a record
skips it (its offset marker), and the last dead-letter and late records in their topics
say which of those were sent (agents tail reads): nothing is counted or sent twice.

The frontier. Every tick the partition's own watermark is made durable and published
(agents/watermarks.py); the low watermark over all input partitions then becomes the
partition's frontier once written to the position record, and is announced to every
stage-2 partition after the partials it covers. From then on a record of a window
ending at or before it is late.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.structs import ConsumerRecord, RecordMetadata

from agents.watermarks import WatermarkBoard
from aggregations.judge import SpecJudge
from formats.chunks import encode_in_runs
from formats.events import Event, EventColumns, Rejection
from formats.partials import (
    PARTIALS_BYTES,
    FrontierMessage,
    encode_frontier,
    encode_partial_columns,
    key_partitions,
    partial_partition,
)
from formats.raw import RawColumns
from formats.side_outputs import (
    FALLBACK_FORWARDED_BYTES,
    MAX_FORWARDED_BYTES,
    SOURCE_HEADER_PREFIX,
    Headers,
    dead_letter_headers,
    forwarded,
    late_headers,
)
from formats.state import PARTIALS_PACK_PREFIX, POSITION_KEY, IngestPosition, encode_ingest_position, pack_key
from formats.watermarks import Mark, encode_mark
from kafka_io.clients import Producer
from kafka_io.tail import last_source_offsets
from kafka_io.topics import Topics
from ops.faults import Faults
from ops.stats import PipelineStats
from settings import Settings
from sinks.archive import PartitionArchive
from sinks.outputs import Outputs
from sinks.policy import ARCHIVE_BUFFERED_FILES
from tables.families import families
from tables.partials import (
    BatchOutcome,
    InstancePartials,
    Limits,
    PartitionPartials,
    Record,
    fold_judged,
    fold_records,
)
from tables.state import decode_ingest_state
from tables.store import PartitionStore, PartitionWriter, close_stores, open_writers
from tables.watermark import PartitionClock

log = logging.getLogger(__name__)

MIN_EVENT_MS = 946_684_800_000  # 2000-01-01: older timestamps are treated as absurd
TICK_INTERVAL_S = 0.2
# On a clean stop or a rebalance the open raw files are written for up to this long, so
# the partition's next owner need not read them again.
GRACEFUL_FLUSH_S = 5.0
# A flush comes at every tick, and sooner once this many partials changed, or this many dead
# letters and late records wait for their acknowledgement.
DIRTY_KEYS_LIMIT = 20_000
SIDE_OUTPUTS_LIMIT = 10_000
TARGET_CACHE_LIMIT = 100_000  # event types whose stage-2 partition is remembered


@dataclass(frozen=True, slots=True)
class IngestContext:
    """What stage 1 uses, and nothing else: a test builds it with fakes."""

    settings: Settings
    topics: Topics
    producer: Producer
    outputs: Outputs
    board: WatermarkBoard
    stats: PipelineStats
    state_dir: Path
    clock_ms: Callable[[], int]
    faults: Faults = dataclasses.field(default_factory=Faults)
    monotonic: Callable[[], float] = time.monotonic


class IngestStage:
    name = "ingest"
    tick_interval_s = TICK_INTERVAL_S

    def __init__(self, ctx: IngestContext) -> None:
        self.ctx = ctx
        self.topic = ctx.topics.events
        self.partitions: dict[int, IngestPartition] = {}

    async def open(self, partitions: Sequence[int], reader: AIOKafkaConsumer) -> dict[int, IngestPartition]:
        ctx = self.ctx
        # Writers first: with transactions, starting one fences the partition's previous owner, so that
        # what is read next (state, dead letters, late records) is all it will ever have written.
        writers = await open_writers(ctx.producer, f"{ctx.settings.app_id}-{self.name}", partitions)
        stores = {p: PartitionStore(ctx.state_dir / "ingest" / f"{p:05d}", ctx.topics.ingest_state, p, writers[p])
                  for p in partitions}
        try:
            restored = {p: decode_ingest_state(await store.restore(reader), p) for p, store in stores.items()}
            dead_upto = await last_source_offsets(reader, ctx.topics.dead_letters, partitions)
            late_upto = await last_source_offsets(reader, ctx.topics.late, partitions)
        except BaseException:
            await close_stores(stores.values())
            raise
        self.partitions = {
            p: IngestPartition(ctx, p, stores[p], *restored[p], dead_upto[p], late_upto[p]) for p in partitions}
        return dict(self.partitions)


class IngestPartition:
    """Stage-1 state and work of one input partition (see the module doc)."""

    def __init__(self, ctx: IngestContext, partition: int, store: PartitionStore, position: IngestPosition,
                 partials: PartitionPartials, dead_letters_upto: int, late_upto: int) -> None:
        self.ctx = ctx
        self.partition = partition
        self.store = store
        self.position = position
        pipeline = ctx.settings.pipeline
        self.spec = pipeline.spec
        self.judge = None if self.spec is None else SpecJudge(self.spec)
        self.windows = families(pipeline.windows, self.spec)  # one per window without a spec
        self._families_of = {aggregation.name: [f for f in self.windows if f.aggregation == aggregation]
                             for aggregation in (self.spec.aggregations if self.spec else ())}
        self._aggregation_of = {f.name: f.aggregation.name for f in self.windows if f.aggregation is not None}
        self.partials = partials
        # A crash between a frontier and the deletes it implied leaves closed partials behind, and
        # a window removed from WINDOWS (or the spec) leaves its open partials: both are dropped.
        configured = {family.name for family in self.windows}
        self._stale = partials.drop_windows({window for window, _ in partials.instances} - configured)
        if self._stale:
            log.warning("partition %d: dropping open partials of %s, which WINDOWS no longer lists", partition,
                        ", ".join(sorted({instance.window for instance in self._stale})))
        if position.frontier_ms is not None:
            self._stale += partials.pop_closed(self.windows, position.frontier_ms)
        self.clock = PartitionClock(pipeline.allowed_lateness_ms, pipeline.idle_timeout_ms, position.event_ms,
                                    ctx.clock_ms())
        self.archive = PartitionArchive(partition, put_archive=self._put_archive,
                                        max_records=pipeline.archive_max_records,
                                        max_age_s=pipeline.archive_max_age_ms / 1000,
                                        columns=EventColumns if self.spec is None else RawColumns)
        self.side_outputs = SideOutputs(store.writer, ctx.topics, partition, dead_letters_upto, late_upto)
        self._published: Mark | None = None
        self._announced_ms: int | None = None  # the frontier stage 2 has heard from this process
        self._max_buffered = ARCHIVE_BUFFERED_FILES * pipeline.archive_max_records
        self._read_next = self.start_offset()  # every valid record before it is archived or buffered
        self._folded_next = position.fold_next if position.fold_next is not None else -1  # in memory
        self._target_of: dict[str, int] = {}  # event type -> its stage-2 partition (murmur2 is slow)
        self._side_sent: list = []  # dead letters and late records sent since the last flush
        if position.fold_next is not None:  # what this partition's earlier owners processed counts too
            offsets = ctx.stats.input_offsets
            offsets[partition] = max(offsets.get(partition, -1), position.fold_next - 1)
        log.info("partition %d: resuming at offset %s (folded up to %s), %d open partials, frontier %s",
                 partition, self.start_offset(), position.fold_next, len(self.partials),
                 position.frontier_ms)

    async def _put_archive(self, partition: int, start_offset: int, records: list) -> object:  # type: ignore[type-arg]
        self.ctx.faults.check("archive.write")
        return await self.ctx.outputs.put_archive(partition, start_offset, records)

    # -- what the runner asks ---------------------------------------------------------------

    def start_offset(self) -> int | None:
        position = self.position
        return position.archive_next if position.archive_next is not None else position.fold_next

    def committable_offset(self) -> int | None:
        return self._archive_next()

    def accepting(self) -> bool:
        return self.archive.buffered() < self._max_buffered

    def _archive_next(self) -> int | None:
        """Where the input must resume for the archive: its first buffered record, or else the next
        offset to read (right after a restore, records up to fold_next may still be read again)."""
        first = self.archive.first_unarchived()
        return first if first is not None else self._read_next

    # -- the hot path -----------------------------------------------------------------------

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        self.archive.raise_if_failed()
        ctx, partition = self.ctx, self.partition
        now_s = ctx.monotonic()
        fresh_from = 0
        while fresh_from < len(records) and records[fresh_from].offset < self._folded_next:
            fresh_from += 1
        if fresh_from:
            self._archive_again(records[:fresh_from], now_s)
        fresh = records[fresh_from:]
        if fresh:
            await self._fold(fresh, now_s)
        self._read_next = records[-1].offset + 1
        if self.partials.dirty_count() >= DIRTY_KEYS_LIMIT or len(self._side_sent) >= SIDE_OUTPUTS_LIMIT:
            await self.flush()
        stats = ctx.stats
        stats.consumed[partition] += len(records)
        stats.input_offsets[partition] = max(stats.input_offsets.get(partition, -1), records[-1].offset)
        stats.archive_buffered[partition] = self.archive.buffered()

    def _archive_again(self, records: Sequence[ConsumerRecord], now_s: float) -> None:
        """Records folded before a restart: only the raw archive may still lack them. (Validity
        does not depend on when a record is read: see Limits.)"""
        limits = self._limits()
        if self.judge is not None:
            columns = RawColumns(self.partition)
            for record in records:
                raw = record.value or b""
                judged = self.judge.judge(raw, max_bytes=limits.max_event_bytes, min_event_ms=limits.min_event_ms,
                                          max_event_ms=limits.latest_event_ms(record.timestamp))
                if not isinstance(judged, Rejection):
                    columns.append(record.offset, judged.event_ms, raw)
            self.archive.add_columns(columns, now_s)
            return
        for record in records:
            decoded = limits.decode(Record(self.partition, record.offset, record.value or b"", record.timestamp))
            if isinstance(decoded, Event):
                self.archive.add(record.offset, decoded, now_s)

    def _limits(self) -> Limits:
        pipeline = self.ctx.settings.pipeline
        return Limits(pipeline.max_event_bytes, MIN_EVENT_MS, pipeline.max_clock_skew_ms, self.ctx.clock_ms())

    async def _fold(self, records: Sequence[ConsumerRecord], now_s: float) -> None:
        ctx, partition = self.ctx, self.partition
        outcome = BatchOutcome()
        if self.judge is None:
            fold_records(partition, records, self.partials, self.windows, self.position.frontier_ms, self._limits(),
                         outcome)
        else:
            fold_judged(partition, records, self.partials, self.judge, self._families_of, self.position.frontier_ms,
                        self._limits(), outcome)
        if outcome.dead_letters or outcome.late:
            self._side_sent += await self.side_outputs.send(outcome, {r.offset: r for r in records})
        event_ms = outcome.max_event_ms.get(partition)
        if event_ms is not None:
            self.clock.observe(event_ms, ctx.clock_ms())
        columns = outcome.columns.get(partition)
        if columns:
            self.archive.add_columns(columns, now_s)
        self._folded_next = records[-1].offset + 1
        ctx.stats.dead_letters += len(outcome.dead_letters)
        ctx.stats.late += len(outcome.late)

    async def flush(self) -> None:
        """Send the changed partials, make them and the side outputs durable, then move the position.

        Once per tick (or sooner when many keys changed), not per batch: a key changed by every
        batch is sent once per flush, which is what bounds the partials of many event types.
        """
        ctx, partition, topics, partials, put = self.ctx, self.partition, self.ctx.topics, self.partials, self.store.put
        send = self.store.writer.send
        partials_sent = []
        for instance, slots in partials.take_dirty():
            encode = functools.partial(encode_partial_columns, partition, instance)
            for target, run in self._by_target(instance, slots).items():
                for start, stop, body in encode_in_runs(run, encode, PARTIALS_BYTES):
                    ctx.faults.check("ingest.send")
                    partials_sent.append(await send(topics.partials, body, partition=target))
                    seq = partials.books.packed(instance.holder, run[start:stop])
                    await put(pack_key(PARTIALS_PACK_PREFIX, seq), body)
        await self._delete_packs()
        # All of it durable before the position passes the records it covers (with transactions: in the same
        # transaction as the position, or an earlier one; the tick commits).
        side_sent, self._side_sent = self._side_sent, []
        await self.side_outputs.wait(side_sent)  # a record refused as too large goes again, cut, before the commit
        await asyncio.gather(*partials_sent)
        await self.store.durable()
        position = self._position_now()
        if position != self.position:
            self.position = position
            await self.store.put(POSITION_KEY, encode_ingest_position(position))

    def _by_target(self, instance: InstancePartials, slots: list[int]) -> dict[int, list[int]]:
        """The slots by the stage-2 partition of their event type (a spec's: of their aggregation and key)."""
        aggregation = self._aggregation_of.get(instance.window)
        if aggregation is not None:
            partitions = self.ctx.settings.kafka.topic_partitions
            keyed: dict[int, list[int]] = {}
            route = functools.partial(key_partitions, aggregation, partitions=partitions)
            for slot, target in zip(slots, instance.routes(slots, route), strict=True):
                keyed.setdefault(target, []).append(slot)
            return keyed
        by_target: dict[int, list[int]] = {}
        target_of, types = self._target_of, instance.types
        for slot in slots:
            event_type = types[slot]
            target = target_of.get(event_type)
            if target is None:
                if len(target_of) >= TARGET_CACHE_LIMIT:
                    target_of.clear()
                target = target_of[event_type] = partial_partition(event_type, self.ctx.settings.kafka.topic_partitions)
            run = by_target.get(target)
            if run is None:
                by_target[target] = [slot]
            else:
                run.append(slot)
        return by_target

    async def _delete_packs(self) -> None:
        for seq in self.partials.books.take_empty():
            await self.store.put(pack_key(PARTIALS_PACK_PREFIX, seq), None)

    def _position_now(self) -> IngestPosition:
        folded = self._folded_next if self._folded_next >= 0 else None  # None: nothing folded yet
        return dataclasses.replace(self.position, fold_next=folded, archive_next=self._archive_next(),
                                   event_ms=self.clock.event_ms)

    # -- ticks: archive files, watermark, frontier ------------------------------------------------

    async def tick(self, now_ms: int) -> None:
        self.archive.raise_if_failed()
        ctx = self.ctx
        self.archive.roll_aged(ctx.monotonic())
        self.clock.credit_idle(now_ms)
        await self.flush()  # partials first: no partial of a window may follow its frontier
        low = ctx.board.low()
        frontier = self.position.frontier_ms
        if low is not None and (frontier is None or low > frontier):
            await self._advance_frontier(low)
        elif self._stale:
            await self._write_position(deletes=self._stale)
        mark = self.clock.mark(now_ms)
        if mark != self._published:
            await self.store.durable()  # the event time behind the mark is durable before anyone uses it
            await self.store.writer.send(ctx.topics.watermarks, encode_mark(mark, now_ms),
                                         key=str(self.partition).encode(), partition=self.partition)
            self._published = mark
        frontier = self.position.frontier_ms
        announced = None
        if frontier is not None and frontier != self._announced_ms:
            await self.store.durable()
            await self._announce(frontier, now_ms)
            announced = frontier
        await self.store.commit()  # the tick's writes visible now (one transaction), not at the next tick
        if announced is not None:
            # Shown (/v1/status) once committed: with transactions, a crash before the commit takes the
            # announcement back, and a frontier shown earlier was one a restart would not resume from.
            ctx.stats.frontiers_ms[self.partition] = announced
        ctx.stats.archive_buffered[self.partition] = self.archive.buffered()

    async def _advance_frontier(self, low_ms: int) -> None:
        closed = self.partials.pop_closed(self.windows, low_ms)
        self.position = dataclasses.replace(self.position, frontier_ms=low_ms)
        await self._write_position(deletes=[*self._stale, *closed])  # frontier first, then the deletes
        await self.store.durable()

    async def _write_position(self, deletes: Sequence[InstancePartials] = ()) -> None:
        self.position = self._position_now()
        await self.store.put(POSITION_KEY, encode_ingest_position(self.position))
        self.partials.books.forget(instance.holder for instance in deletes)
        await self._delete_packs()
        self._stale = []

    async def _announce(self, frontier_ms: int, now_ms: int) -> None:
        """Tell every stage-2 partition, after the partials it covers (same writer, in order)."""
        ctx = self.ctx
        partitions = ctx.settings.kafka.topic_partitions
        body = encode_frontier(FrontierMessage(self.partition, frontier_ms, partitions, now_ms))
        for target in range(partitions):
            await self.store.writer.send(ctx.topics.partials, body, partition=target)
        self._announced_ms = frontier_ms

    # -- revocation ------------------------------------------------------------------------------

    async def close(self, *, graceful: bool) -> None:
        try:
            if graceful:
                await self.flush()
                if await self.archive.flush(GRACEFUL_FLUSH_S):
                    await self._write_position()
                await self.store.commit()
        except Exception as exc:  # noqa: BLE001 - best effort: the next owner reads the rest again
            log.info("partition %d: stopped without writing every raw file (%r); its next owner reads them again",
                     self.partition, exc)
        finally:
            await self.archive.close()
            await close_stores([self.store])
            self.ctx.stats.forget_partition(self.partition)


@dataclass(frozen=True, slots=True)
class _Forward:
    """An original record on its way to the dead-letter or late topic."""

    topic: str
    raw: bytes
    key: bytes | None
    timestamp_ms: int | None
    headers: Headers


class SideOutputs:
    """Dead letters and late records of one input partition: each sent once, whatever its size.

    Both go to the partition of their source record, in source order, with its key, its
    timestamp and its headers (renamed `source.header.<name>`, so they cannot collide with
    ours), and carry its offset in a header; at assignment the last record of each says up to
    which source offset they were sent (kafka_io.tail.last_source_offsets), so a replay sends
    none twice. An original too large for the producer or the broker is forwarded cut
    (formats.side_outputs.forwarded), never left behind: a bad record must not stop the worker.
    """

    def __init__(self, writer: PartitionWriter, topics: Topics, partition: int, dead_letters_upto: int,
                 late_upto: int) -> None:
        self.writer = writer
        self.topics = topics
        self.partition = partition
        self.dead_letters_upto = dead_letters_upto
        self.late_upto = late_upto

    async def send(self, outcome: BatchOutcome, originals: Mapping[int, ConsumerRecord]
                   ) -> list[tuple[asyncio.Future[RecordMetadata], _Forward]]:
        topics, partition = self.topics, self.partition
        sent = []
        for record, rejection in outcome.dead_letters:
            if record.offset > self.dead_letters_upto:
                headers = dead_letter_headers(topics.events, partition, record.offset, rejection)
                forward = self._forward(topics.dead_letters, record.raw, originals[record.offset], headers)
                sent.append((await self._send(forward, MAX_FORWARDED_BYTES), forward))
                self.dead_letters_upto = record.offset
        for late in outcome.late:
            record = late.record
            if record.offset > self.late_upto:
                headers = late_headers(topics.events, partition, record.offset, late.closed)
                forward = self._forward(topics.late, record.raw, originals[record.offset], headers)
                sent.append((await self._send(forward, MAX_FORWARDED_BYTES), forward))
                self.late_upto = record.offset
        return sent

    @staticmethod
    def _forward(topic: str, raw: bytes, original: ConsumerRecord, headers: Headers) -> _Forward:
        extra = [(f"{SOURCE_HEADER_PREFIX}{name}", bytes(value)) for name, value in original.headers or ()]
        timestamp = original.timestamp if original.timestamp is not None and original.timestamp >= 0 else None
        return _Forward(topic, raw, original.key, timestamp, [*headers, *extra])

    async def wait(self, sent: list[tuple[asyncio.Future[RecordMetadata], _Forward]]) -> None:
        """Wait for the broker to have them; one it refused as too large goes again, cut short."""
        for future, forward in sent:
            try:
                await future
            except MessageSizeTooLargeError:
                await (await self._send(forward, FALLBACK_FORWARDED_BYTES))

    async def _send(self, forward: _Forward, max_bytes: int) -> asyncio.Future[RecordMetadata]:
        for limit in (max_bytes, FALLBACK_FORWARDED_BYTES):
            value, headers = forwarded(forward.raw, forward.headers, limit)
            try:
                return await self.writer.send(forward.topic, value, key=forward.key, partition=self.partition,
                                                headers=headers, timestamp_ms=forward.timestamp_ms)
            except MessageSizeTooLargeError:  # beyond the producer's own limit: cut it further
                if limit == FALLBACK_FORWARDED_BYTES:
                    raise
        raise AssertionError("unreachable")
