"""Stage 1, the ingest agent: validate, dead-letter, archive and pre-aggregate the events topic.

Per batch of records (see tables.partials for the exactly-once rules):
- bad records go to the dead-letter topic with the original bytes, reason and position;
- valid records are folded into per-partition partial aggregates (one table write and
  one partial message per changed key per batch, never per event), and buffered for the
  raw archive; records in already-closed windows also go to the late topic.

Every FRONTIER_INTERVAL_S the worker's low watermark becomes the new frontier of its
partitions: windows ending before it are closed for them. The frontier is written to
the progress table and flushed *before* stage 2 hears of it, so after a crash the
restored frontier is never behind one that was announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from agents.archive import Archiver
from agents.tail import last_source_offsets
from models import (
    FrontierMessage,
    PartialMessage,
    dead_letter_headers,
    encode_frontier,
    encode_partial,
    late_headers,
    parse_partial_table_key,
    partial_table_key,
)
from tables.context import writing_partition
from tables.partials import BatchOutcome, Limits, PartialKey, PartitionPartials, fold_batch
from tables.watermark import WatermarkTracker

if TYPE_CHECKING:
    from faust import StreamT

    from app import PipelineApp
    from channels import Channels

log = logging.getLogger(__name__)

BATCH_SIZE = 10_000
BATCH_WITHIN_S = 0.2
FRONTIER_INTERVAL_S = 1.0
# Ticks a partition may look stalled before it is re-read: an idle agent delivers pending
# records within a batch window (0.2 s), so 5 s of no delivery is not a slow batch.
STALL_TICKS = 5
PROGRESS_EVERY_S = 5.0
MIN_EVENT_MS = 946_684_800_000  # 2000-01-01: older timestamps are treated as absurd


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Ingest:
    """Stage-1 state of the partitions this worker owns."""

    def __init__(self, app: PipelineApp, channels: Channels) -> None:
        self.app = app
        self.channels = channels
        self.settings = app.settings.pipeline
        self.windows = self.settings.windows
        self.tracker = WatermarkTracker(self.settings.allowed_lateness_ms, self.settings.idle_timeout_ms)
        self.partitions: dict[int, PartitionPartials] = {}
        self.frontiers_ms: dict[int, int | None] = {}
        self.settled_upto: dict[int, int] = {}  # offset processed when the frontier was set
        self.processed_upto: dict[int, int] = {}
        self.max_event_ms: dict[int, int] = {}
        self.dead_letters_upto: dict[int, int] = {}
        self.late_upto: dict[int, int] = {}
        self.lock = asyncio.Lock()  # batches and frontier ticks never interleave
        self.delivered_upto: dict[int, int] = {}  # highest offset the agent got since assignment
        # partition -> ((delivered, position), consecutive ticks seen unchanged)
        self._stalled: dict[int, tuple[tuple[int, int], int]] = {}
        self.archiver = Archiver(put_archive=app.outputs.put_archive, max_records=self.settings.archive_max_records,
                                 max_age_s=self.settings.archive_max_age_ms / 1000)

    # -- partition ownership ------------------------------------------------------------

    def owned(self) -> set[int]:
        topic = self.channels.events.get_topic_name()
        return {tp.partition for tp in self.app.consumer.assignment() if tp.topic == topic}

    def on_revoked(self, partitions: Iterable[int]) -> None:
        revoked = list(partitions)
        for partition in revoked:
            self.partitions.pop(partition, None)
            self.frontiers_ms.pop(partition, None)
            self.settled_upto.pop(partition, None)
            self.processed_upto.pop(partition, None)
            self.delivered_upto.pop(partition, None)
            self.max_event_ms.pop(partition, None)
            # dead_letters_upto and late_upto stay: what this process sent is in the topics
            # even if the tail read after a reassignment misses it (see ensure_loaded).
            self.archiver.forget(partition)
        self.tracker.revoke([p for p in revoked if p in self.tracker.assigned])

    async def ensure_loaded(self, partitions: Iterable[int]) -> None:
        """Load the state of newly owned partitions from their tables (after recovery)."""
        missing = sorted(set(partitions) - set(self.partitions))
        if not missing:
            return
        topic = self.channels.events.get_topic_name()
        values: dict[int, dict[PartialKey, list[float]]] = {p: {} for p in missing}
        for table_key, value in self.channels.partial_table.items():
            partition, key = parse_partial_table_key(table_key)
            if partition in values:
                values[partition][key] = list(value)
        kafka = self.app.settings.kafka
        await self.app.producer.flush()  # so that the tails include everything this process sent
        dead_upto = await last_source_offsets(kafka, self.channels.dead_letters.get_topic_name(), missing)
        late_upto = await last_source_offsets(kafka, self.channels.late.get_topic_name(), missing)
        clock_ms = now_ms()
        for partition in missing:
            with writing_partition(topic, partition):
                progress = self.channels.progress_table.get(str(partition)) or {}
            self.partitions[partition] = PartitionPartials(partition, values[partition])
            self.frontiers_ms[partition] = progress.get("f")
            self.settled_upto[partition] = progress.get("o", -1)
            # Records up to "x" are folded already; a frontier raised after the restart
            # settles them too, so their replay is not mistaken for late data.
            self.processed_upto[partition] = progress.get("x", -1)
            self.dead_letters_upto[partition] = max(dead_upto[partition], self.dead_letters_upto.get(partition, -1))
            self.late_upto[partition] = max(late_upto[partition], self.late_upto.get(partition, -1))
            self.tracker.assign([partition], clock_ms)
            if progress.get("e") is not None:
                self.max_event_ms[partition] = progress["e"]
                self.tracker.observe(partition, progress["e"], clock_ms)
            log.info("partition %d: %d open partials, frontier %s", partition, len(values[partition]),
                     progress.get("f"))

    # -- the hot path -------------------------------------------------------------------

    async def process(self, batch: list[Any]) -> None:
        records = [(e.message.partition, e.message.offset, e.value) for e in batch]
        in_batch = {partition for partition, _, _ in records}
        async with self.lock:
            new = in_batch - set(self.partitions)
            await self.ensure_loaded(in_batch)
            for partition in sorted(new):
                first = next(offset for p, offset, _ in records if p == partition)
                log.info("partition %d: reading from offset %d", partition, first)
            clock_ms = now_ms()
            limits = Limits(self.settings.max_event_bytes, MIN_EVENT_MS,
                            clock_ms + self.settings.max_clock_skew_ms)
            outcome = fold_batch(records, self.partitions, self.windows, self.frontiers_ms, self.settled_upto,
                                 limits)
            processed = self.processed_upto
            for partition, offset, _ in records:
                # Never lower: after a restart the replay starts below the restored value.
                if offset > processed.get(partition, -1):
                    processed[partition] = offset
                self.delivered_upto[partition] = offset  # in this run, for refetch_dropped
            await self._send_side_outputs(outcome)
            await self._store_partials(outcome)
            for partition, event_ms in outcome.max_event_ms.items():
                if event_ms > self.max_event_ms.get(partition, event_ms - 1):
                    self.max_event_ms[partition] = event_ms
                self.tracker.observe(partition, event_ms, clock_ms)
            for partition in in_batch:
                # Durable before the batch's offsets are committed: a restart knows the
                # event times it will not see again, and which replayed records it folded.
                self._write_progress(partition)
            # Valid records wait for the raw archive before faust may commit them; dead
            # letters are done once sent, but their acks go through the archiver too, so
            # that none overtakes a valid record's. `valid` keeps the order and identity of
            # `records`.
            archive: list[tuple[int, int, Any, Any]] = []
            valid = outcome.valid
            next_valid = 0
            for record, event in zip(records, batch, strict=True):
                if next_valid < len(valid) and valid[next_valid][0] is record:
                    archive.append((record[0], record[1], valid[next_valid][1], event))
                    next_valid += 1
                else:
                    archive.append((record[0], record[1], None, event))
            await self.archiver.add_batch(archive, time.monotonic())
            stats = self.app.stats
            stats.consumed.update(Counter(partition for partition, _, _ in records))
            stats.input_offsets.update(self.processed_upto)
            stats.dead_letters += len(outcome.dead_letters)
            stats.late += len(outcome.late)
            stats.archive_buffered = self.archiver.buffered()

    async def _send_side_outputs(self, outcome: BatchOutcome) -> None:
        source = self.channels.events.get_topic_name()
        for record, rejection in outcome.dead_letters:
            if record.offset > self.dead_letters_upto[record.partition]:
                await self.channels.dead_letters.send(
                    key=None, value=record.raw, partition=record.partition,
                    headers=dead_letter_headers(source, record.partition, record.offset, rejection))
                self.dead_letters_upto[record.partition] = record.offset
        for late in outcome.late:
            record = late.record
            if record.offset > self.late_upto[record.partition]:
                await self.channels.late.send(
                    key=late.event.user_id.encode(), value=record.raw, partition=record.partition,
                    headers=late_headers(source, record.partition, record.offset, late.closed))
                self.late_upto[record.partition] = record.offset

    async def _store_partials(self, outcome: BatchOutcome) -> None:
        topic = self.channels.events.get_topic_name()
        table = self.channels.partial_table
        for partition, keys in outcome.dirty.items():
            values = self.partitions[partition].values
            with writing_partition(topic, partition):
                for key in keys:
                    table[partial_table_key(partition, key)] = values[key]
            for key in keys:
                message_key, message = encode_partial(PartialMessage(partition, key, values[key]))
                await self.channels.partials.send(key=message_key, value=message)

    # -- frontier ticks -----------------------------------------------------------------

    async def advance_frontier(self) -> None:
        app = self.app
        if app.rebalancing or not app.tables.recovery.completed.is_set():
            return
        async with self.lock:
            owned = self.owned()
            if not owned:
                return
            await self.ensure_loaded(owned)
            clock_ms = now_ms()
            low_ms = self.tracker.low_watermark(clock_ms)
            if low_ms is None:
                return
            topic = self.channels.events.get_topic_name()
            changed = []
            for partition in sorted(owned):
                previous = self.frontiers_ms.get(partition)
                if previous is not None and low_ms <= previous:
                    continue
                closed = self.partitions[partition].pop_closed(self.windows, low_ms)
                with writing_partition(topic, partition):
                    for key, _ in closed:
                        del self.channels.partial_table[partial_table_key(partition, key)]
                self.frontiers_ms[partition] = low_ms
                self.settled_upto[partition] = self.processed_upto.get(partition, -1)
                self._write_progress(partition)
                changed.append(partition)
            if not changed:
                return
            await app.producer.flush()  # the frontier is durable before stage 2 can act on it
            targets = range(self.app.settings.kafka.topic_partitions)
            source_partitions = self.app.settings.kafka.topic_partitions
            for partition in changed:
                body = encode_frontier(FrontierMessage(partition, low_ms, source_partitions, clock_ms))
                for target in targets:
                    await self.channels.partials.send(key=None, value=body, partition=target)
            self.app.stats.frontier_ms = low_ms

    def _write_progress(self, partition: int) -> None:
        """One record per partition: frontier, offset settled with it, highest event time, offset processed."""
        with writing_partition(self.channels.events.get_topic_name(), partition):
            self.channels.progress_table[str(partition)] = {
                "f": self.frontiers_ms.get(partition), "o": self.settled_upto.get(partition, -1),
                "e": self.max_event_ms.get(partition), "x": self.processed_upto.get(partition, -1)}

    async def refetch_dropped(self) -> None:
        """Re-read from the committed offset where faust dropped fetched records.

        Seen on this stack after a restart into a group with a dead member (two
        rebalances in a row): faust discarded a fetched batch while aiokafka's position
        had already moved past it, so those records never reached the agent; the
        partition stalled, or its raw archive missed them. Where a partition's fetch
        position stays ahead of the last offset delivered to the agent, with nothing
        delivered for STALL_TICKS ticks in a row while the agent is idle, it is sought
        back to its committed offset and its archive buffer dropped. Every output is idempotent under replay, so a false
        alarm costs a re-read, never a duplicate.
        """
        app = self.app
        if app.rebalancing or not app.tables.recovery.completed.is_set() or self.lock.locked():
            return
        consumer = app.consumer
        topic = self.channels.events.get_topic_name()
        for tp in [tp for tp in consumer.assignment() if tp.topic == topic]:
            committed = consumer._committed_offset.get(tp) or 0  # faust's last commit (private)
            delivered = self.delivered_upto.get(tp.partition, committed - 1)
            position = await consumer.position(tp)
            if position is None or position <= delivered + 1:
                self._stalled.pop(tp.partition, None)
                continue
            seen = (delivered, position)
            sighting = self._stalled.get(tp.partition)
            if sighting is None or sighting[0] != seen:
                self._stalled[tp.partition] = (seen, 1)  # first sighting: maybe just in flight
                continue
            if sighting[1] < STALL_TICKS:
                self._stalled[tp.partition] = (seen, sighting[1] + 1)
                continue
            log.warning("partition %d: fetched up to %d but delivered up to %d; re-reading from %d",
                        tp.partition, position, delivered, committed)
            self._stalled.pop(tp.partition, None)
            self.delivered_upto.pop(tp.partition, None)
            self.archiver.forget(tp.partition)
            await consumer.seek(tp, committed)

    async def flush_archive(self) -> None:
        """Write every open archive file (before faust waits for all acks)."""
        async with self.lock:
            await self.archiver.roll_all()
            self.app.stats.archive_buffered = self.archiver.buffered()

    async def roll_archive(self) -> None:
        """Roll aged archive files; during a rebalance, every open file.

        faust waits for every record it handed out to be acked before it gives partitions
        away, and a buffered record is acked only once archived. `PipelineApp` flushes the
        files before that wait; a batch that was still running then adds records, which
        this tick writes, so the rebalance goes on and the new owner starts after them.
        """
        if self.app.rebalancing:
            await self.flush_archive()
            return
        async with self.lock:
            await self.archiver.roll_aged(time.monotonic())
            self.app.stats.archive_buffered = self.archiver.buffered()


def register(app: PipelineApp, channels: Channels) -> Ingest:
    ingest = Ingest(app, channels)

    async def ingest_agent(stream: StreamT[bytes]) -> None:
        # Acks are manual: a valid event is acked once it is in the raw archive. (faust's
        # take_events acks every event after the batch whatever noack() says; noack_take does not.)
        async for batch in stream.noack().noack_take(BATCH_SIZE, within=BATCH_WITHIN_S):
            await ingest.process(batch)

    async def frontier_tick() -> None:
        await ingest.advance_frontier()
        await ingest.roll_archive()
        await ingest.refetch_dropped()

    async def log_progress() -> None:
        total, rate = app.stats.rate_since_last_call(time.monotonic())
        if rate > 0:
            log.info("consumed %d events (%.0f events/s), %d dead-lettered, %d late, frontier %s",
                     total, rate, app.stats.dead_letters, app.stats.late, app.stats.frontier_ms)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        topic = channels.events.get_topic_name()
        ingest.on_revoked(tp.partition for tp in revoked if tp.topic == topic)

    app.agent(channels.events, name="ingest")(ingest_agent)
    app.timer(FRONTIER_INTERVAL_S, name="frontier-tick")(frontier_tick)
    app.timer(PROGRESS_EVERY_S, name="ingest-progress")(log_progress)
    app.on_partitions_revoked.connect(on_revoked)
    return ingest
