"""A stage runner: one consumer-group member that restores, feeds and revokes partition processors.

A stage (agents/ingest.py, agents/export.py) keeps the state of each input partition it
owns in a processor, restored from that partition's changelog when the partition is
assigned. The processor says where the input resumes (its own stored position: committed
offsets are never trusted for it), takes batches of raw records in offset order, and
ticks. The runner owns the loop around them:

- assignment: partitions arrive paused; the loop restores their processors, seeks each to
  its processor's position and resumes it.
- revocation (the eager protocol revokes everything at every rebalance): the loop stops
  between two units of work (a batch of every partition, or a tick), processors close
  (gracefully: writing what they can in a few seconds), and the producer is flushed before
  the group goes on, so that a partition's next owner reads every record its previous owner
  wrote. A unit of work that does not end within UNIT_WAIT_S is cancelled, and its
  processors then close without writing anything: cancelled in the middle, their state in
  memory is half changed (partials taken for sending and not sent, a position past them),
  and writing it would commit that half (NOTES.md, Real Kafka: the zombie test's lost
  events). Closing without writing is a crash, which the stages are built to survive.
- flow: a processor that cannot take more (a sink write pending, a full buffer) has its
  partition paused; the loop keeps polling, so the member stays in the group.
- failure: any unexpected exception stops the worker process (crash-only): its state
  in memory is then unknown, and a restart resumes from durable state, which is exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import ProducerFenced
from aiokafka.structs import ConsumerRecord
from mode import Service

from agents.group import StickyAssignor
from kafka_io.clients import BrokerAccessError, Producer
from tables.changelog import ISOLATION_LEVEL, end_of, reader

log = logging.getLogger(__name__)

POLL_TIMEOUT_MS = 100
# A batch runs to its end before the loop does anything else (stage 2's exports, ticks, web):
# 5,000 records keep that under ~100 ms at full speed. Measured with 1M events: 20,000 gave the same
# throughput with twice the export delay (p50 930 ms against 500 ms).
MAX_POLL_RECORDS = 5_000
COMMIT_EVERY_S = 5.0  # committed offsets are for monitoring tools only; positions live in the state
REVOKE_FLUSH_TIMEOUT_S = 20.0
# How long a revocation waits for the unit of work under way (a batch takes ~100 ms at full speed).
UNIT_WAIT_S = 5.0
CRASH_EXIT_STATUS = 70  # EX_SOFTWARE
FENCED = "another worker took over its partitions while it was paused"  # in the log line of a fenced zombie
# Session and rebalance timeouts: a dead member is noticed within the session timeout
# (Tansu answers a first JoinGroup after half of it), and members rejoin quickly.
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 1_000
REBALANCE_TIMEOUT_MS = 30_000
# The loop polls while sinks are slow (partitions paused), so only a hung loop misses this.
MAX_POLL_INTERVAL_MS = 300_000


class PartitionProcessor(Protocol):
    def start_offset(self) -> int | None: ...  # where the input resumes; None: the beginning

    def committable_offset(self) -> int | None: ...  # for monitoring: the offset a restart would read from

    def accepting(self) -> bool: ...

    async def process(self, records: Sequence[ConsumerRecord]) -> None: ...

    async def tick(self, now_ms: int) -> None: ...

    async def close(self, *, graceful: bool) -> None: ...


class Stage(Protocol):
    name: str
    topic: str
    tick_interval_s: float

    async def open(self, partitions: Sequence[int], reader: AIOKafkaConsumer) -> dict[int, PartitionProcessor]: ...


def exit_process(exc: BaseException) -> None:
    """Crash-only: log why, and end the process at once (a supervisor restarts it)."""
    if isinstance(exc, ProducerFenced):
        # Expected of a zombie: the worker was paused past the session timeout, and its partitions' next
        # owners fenced its writers (kafka_io.clients.TransactionalWriter). Nothing it wrote since is visible.
        log.error("stopping the worker: %s, and fenced its writes (%r); it restarts and rejoins", FENCED, exc)
    else:
        log.critical("stopping the worker after an unexpected error; its state is restored from Kafka on restart",
                     exc_info=exc)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os._exit(CRASH_EXIT_STATUS)


def exit_with_line(line: str, status: int = 2) -> None:
    """A configuration error: one line on the real stderr (faust's worker routes sys.stderr into its
    log), and the process ends at once with status 2."""
    stream = sys.__stderr__ or sys.stderr
    stream.write(line + "\n")
    stream.flush()
    os._exit(status)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class StageRunner(Service):
    def __init__(self, stage: Stage, *, group_id: str, client_options: dict[str, object], producer: Producer,
                 url: str, partitions: int, on_crash: Callable[[BaseException], None] = exit_process,
                 clock_ms: Callable[[], int] = wall_ms) -> None:
        super().__init__()
        self.stage = stage
        self.partitions = partitions
        self.group_id = group_id
        self._options = client_options
        self._producer = producer
        self._on_crash = on_crash
        self._on_layout_error = exit_with_line
        self._clock_ms = clock_ms
        self.assignor = StickyAssignor(url, self._owned_partitions)
        self.processors: dict[int, PartitionProcessor] = {}
        self.assigned: list[int] = []  # as of the last assignment (also while restoring)
        self.rebalancing = True  # until the first assignment's processors are open
        self.positions: dict[int, int] = {}  # next offset to process, per owned partition
        self._to_open: list[int] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: AIOKafkaConsumer | None = None
        self._next_tick_s = 0.0
        self._next_commit_s = 0.0
        self._stopping = False
        self._stop_requested = False  # the loop returns at the end of its unit of work
        self._in_unit = False  # the loop is in a unit of work: the processors' state is half changed

    # -- lifecycle ------------------------------------------------------------------------

    async def on_start(self) -> None:
        self._reader = reader(self._options)
        await self._reader.start()
        self._consumer = AIOKafkaConsumer(
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level=ISOLATION_LEVEL,
            partition_assignment_strategy=(self.assignor,), session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS, rebalance_timeout_ms=REBALANCE_TIMEOUT_MS,
            max_poll_interval_ms=MAX_POLL_INTERVAL_MS, fetch_max_wait_ms=POLL_TIMEOUT_MS,
            max_partition_fetch_bytes=4 * 1024 * 1024, **self._options)
        self._consumer.subscribe([self.stage.topic], listener=_Listener(self))
        await self._consumer.start()  # the loop starts with the first assignment

    async def on_stop(self) -> None:
        self._stopping = True  # an assignment that completes while the consumer leaves starts nothing
        whole = await self._stop_loop()
        await self._close_processors(graceful=whole)
        await self._flush()
        if self._consumer is not None:
            await self._consumer.stop()  # leaves the group: the others rebalance at once
        if self._reader is not None:
            await self._reader.stop()

    # -- what the web views and metrics read -------------------------------------------------

    @property
    def ready(self) -> bool:
        return not self.rebalancing and self._to_open is None

    def owners(self) -> dict[str, list[int]]:
        """Web URL -> partitions of this stage, for the whole group, as of the last assignment."""
        return self.assignor.owners

    def duplicate_urls(self) -> list[str]:
        """Web URLs more than one member of the group advertised at the last assignment (a misconfiguration)."""
        return self.assignor.duplicates

    def lag(self) -> dict[int, int]:
        """Records not yet processed per owned partition: the end (tables.changelog.end_of) minus the next
        offset to process."""
        lag: dict[int, int] = {}
        consumer = self._consumer
        if consumer is None:
            return lag
        for partition, position in self.positions.items():
            end = end_of(consumer, TopicPartition(self.stage.topic, partition))
            if end is not None:
                lag[partition] = max(0, end - position)
        return lag

    def _owned_partitions(self) -> list[int]:
        return list(self.assigned)

    # -- the loop -------------------------------------------------------------------------

    def _start_loop(self) -> None:
        if self._loop_task is not None and not self._loop_task.done():
            # Revocation always stops the loop before the next assignment starts it.
            self._on_crash(RuntimeError(f"{self.stage.name}: a second loop was about to start"))
        self._stop_requested = False
        self._loop_task = asyncio.ensure_future(self._run_guarded())

    async def _stop_loop(self) -> bool:
        """Stop the loop at the end of its unit of work, or cancel it after UNIT_WAIT_S. True when the
        processors' state is whole (the loop stopped between two units), False when it was cancelled in one."""
        task, self._loop_task = self._loop_task, None
        if task is None or task.done():
            return True
        self._stop_requested = True
        if self._in_unit:
            await asyncio.wait([task], timeout=UNIT_WAIT_S)
        if not task.done():
            task.cancel()  # waiting for records, restoring, or stuck in a unit of work past UNIT_WAIT_S
        with contextlib.suppress(asyncio.CancelledError):
            await task
        whole = not self._in_unit
        if not whole:
            log.warning("%s: a batch or tick did not end within %.0fs of the revocation; its partitions close "
                        "without writing, and their next owners read again what they had not stored",
                        self.stage.name, UNIT_WAIT_S)
        self._in_unit = False
        return whole

    async def _run_guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BrokerAccessError as exc:  # a setting to fix (KAFKA_TRANSACTIONS), not a failure to restart on
            self._on_layout_error(f"error: {exc}")
        except BaseException as exc:  # noqa: BLE001 - crash-only: whatever it was, stop the worker
            if self._stopping:
                log.debug("%s: loop ended while stopping: %r", self.stage.name, exc)
                return
            self._on_crash(exc)

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None and self._reader is not None
        if self._to_open is not None:
            await self._open(self._to_open)
        # A revocation stops the loop where the processors' state is whole: here, between two units of work.
        while not self._stop_requested:
            batches = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_POLL_RECORDS)
            if self._stop_requested:
                return  # records fetched and not processed: the next owner reads them from the processors' positions
            work = [(tp.partition, processor, records) for tp, records in batches.items()
                    if records and (processor := self.processors.get(tp.partition)) is not None]
            # Partitions are independent: their batches run together, so that their waits for the
            # broker's acknowledgements overlap.
            self._in_unit = True
            await asyncio.gather(*(processor.process(records) for _, processor, records in work))
            for partition, _, records in work:
                self.positions[partition] = records[-1].offset + 1
            self._in_unit = False
            if self._stop_requested:
                return
            now_s = time.monotonic()
            if now_s >= self._next_tick_s:
                self._next_tick_s = now_s + self.stage.tick_interval_s
                now_ms = self._clock_ms()
                # Together, like batches: a tick waits for acknowledgements (partials, changelog), and
                # one partition after another would leave the loop idle for each round trip in turn.
                self._in_unit = True
                await asyncio.gather(*(processor.tick(now_ms) for processor in list(self.processors.values())))
                self._in_unit = False
                if self._stop_requested:
                    return
            self._apply_flow(consumer)
            if now_s >= self._next_commit_s:
                self._next_commit_s = now_s + COMMIT_EVERY_S
                await self._commit_for_monitoring(consumer)

    async def _open(self, partitions: list[int]) -> None:
        consumer = self._consumer
        assert consumer is not None and self._reader is not None
        started = time.monotonic()
        processors = await self.stage.open(partitions, self._reader)
        self.processors = processors
        for partition, processor in processors.items():
            tp = TopicPartition(self.stage.topic, partition)
            start = processor.start_offset()
            if start is None:
                await consumer.seek_to_beginning(tp)
                self.positions[partition] = 0
            else:
                consumer.seek(tp, start)
                self.positions[partition] = start
        self._to_open = None
        self.rebalancing = False
        consumer.resume(*[TopicPartition(self.stage.topic, p) for p in processors])
        log.info("%s: partitions %s ready in %.1fs, resuming at %s", self.stage.name,
                 ",".join(map(str, sorted(processors))) or "none", time.monotonic() - started,
                 {p: self.positions[p] for p in sorted(processors)})

    def _apply_flow(self, consumer: AIOKafkaConsumer) -> None:
        paused = consumer.paused()
        for partition, processor in self.processors.items():
            tp = TopicPartition(self.stage.topic, partition)
            if processor.accepting():
                if tp in paused:
                    consumer.resume(tp)
            elif tp not in paused:
                consumer.pause(tp)

    async def _commit_for_monitoring(self, consumer: AIOKafkaConsumer) -> None:
        offsets = {}
        for partition, processor in self.processors.items():
            offset = processor.committable_offset()
            if offset is not None:
                offsets[TopicPartition(self.stage.topic, partition)] = offset
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - monitoring only: a rebalance may be under way
            log.debug("%s: commit for monitoring failed: %r", self.stage.name, exc)

    # -- rebalances ---------------------------------------------------------------------------

    async def _revoke(self) -> None:
        self.rebalancing = True
        whole = await self._stop_loop()
        await self._close_processors(graceful=whole)
        await self._flush()

    def _assigned(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        found = consumer.partitions_for_topic(self.stage.topic)
        if found is not None and len(found) != self.partitions:
            # Someone changed the topic under a running group: windows would close on the wrong partitions.
            self._on_layout_error(f"error: topic {self.stage.topic} now has {len(found)} partitions but "
                                  f"TOPIC_PARTITIONS is {self.partitions}; the worker stops")
        partitions = sorted(tp.partition for tp in assigned if tp.topic == self.stage.topic)
        self.assigned = partitions
        if self._stopping:
            return
        self._to_open = partitions
        if assigned:
            consumer.pause(*assigned)  # until their processors are restored and have sought
        log.info("%s: assigned partitions %s", self.stage.name, ",".join(map(str, partitions)) or "none")
        self._start_loop()

    async def _close_processors(self, *, graceful: bool) -> None:
        processors, self.processors = self.processors, {}
        self.positions = {}
        # Together: each may spend a few seconds writing what it holds (raw files to S3).
        await asyncio.gather(*(processor.close(graceful=graceful) for processor in processors.values()))

    async def _flush(self) -> None:
        try:
            await asyncio.wait_for(self._producer.flush(), REVOKE_FLUSH_TIMEOUT_S)
        except TimeoutError as exc:
            # The next owner could read the changelog before these records land: stop instead.
            self._on_crash(RuntimeError(f"{self.stage.name}: the producer did not flush within "
                                        f"{REVOKE_FLUSH_TIMEOUT_S:.0f}s during a rebalance ({exc!r})"))


class _Listener(ConsumerRebalanceListener):
    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self.runner._revoke()
        except BaseException as exc:  # noqa: BLE001 - crash-only
            self.runner._on_crash(exc)
            raise

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runner._assigned(assigned)
