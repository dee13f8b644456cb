"""Stage 2, the export stage: merge partials, close windows, export each exactly once.

It consumes the partials topic, keyed by (window, window_start, event_type) and partitioned
by event type (formats.partials.partial_partition), so each window key has one owner, and every window
of an event type the same one. One `ExportPartition` per owned partials partition keeps the
newest partial of every input partition per window key (tables.totals), every input
partition's frontier, the export ledger and its input position, all in that partition
of one changelog (tables/store.py), written in input order. A restored state is the state
after some prefix of the input, so replaying from its stored position rebuilds exactly
what was lost.

A window closes once every input partition's frontier has passed its end: every partial
of it precedes those frontiers in the input (stage 1 sends its partials first, in order),
so the window's totals are final and the same on every replay. Its rows go to S3 (one
deterministic object per window start and stage-2 partition, overwritten as a whole) and
Redis (idempotent writes); only then is it entered in the ledger and its totals deleted.
A crash before that exports identical content again; a replayed partial of a window in
the ledger is ignored, so a window never re-opens with part of its data.

Exports run in the background while the partition is paused: a store outage holds the
partials in Kafka, not in memory, and a rebalance abandons the export to the next owner.

Alert rules (alerts/) are judged in the same job, window by window in (end, window) order,
right after a window's rows are written and before its ledger entry: the alerts are sent to
the alerts topic (this partition's partition of it, each with its sequence number) and
awaited, written to Redis, and only then is the rules' state (tracks, the window's cursor,
the next sequence number) written. Every window of an event type comes to this partition
(formats.partials.partial_partition), so its state has one home, restored with the ledger. A job whose
low frontier is L judges every window ending at or before L, so whatever the jobs' sizes,
the windows are judged in one order, each once from the state the previous one left: a
replay from a restored prefix makes the same alerts with the same numbers, and at
assignment the last record of the alerts partition says which of them were sent (the
dead letters' pattern, agents/ingest.SideOutputs). Windows closed with no row at all are
judged too (absence fires when traffic stops); after a quiet stretch long enough that no
rule state can change any more (alerts.engine.quiet_limit) the cursor jumps to the next
window with rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from alerts.engine import evaluate_window, parse_track_key, quiet_limit, track_key
from alerts.rules import Rule
from formats.aggregates import AggregateColumns, AggregateRow
from formats.alerts import Alert, alert_headers, alert_seq, encode_alert
from formats.chunks import encode_in_runs
from formats.events import iso_utc
from formats.partials import (
    FrontierMessage,
    PartialColumns,
    PartialKey,
    decode_stage_message,
    key_part_columns,
    key_partition,
    key_text,
    partial_partition,
)
from formats.rows import WindowRow
from formats.state import (
    ALERT_SEQ_KEY,
    PACK_BYTES,
    POSITION_KEY,
    TOTALS_PACK_PREFIX,
    cursor_state_key,
    encode_cursor,
    encode_export_position,
    encode_number,
    encode_totals_columns,
    encode_track,
    frontier_state_key,
    ledger_state_key,
    pack_key,
    track_state_key,
)
from kafka_io.clients import Producer
from kafka_io.tail import last_source_offsets
from kafka_io.topics import Topics
from ops.faults import Faults
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import Settings
from sinks.outputs import Outputs
from tables.families import Family, families
from tables.state import ExportState, decode_export_state
from tables.store import PartitionStore, close_stores, open_writers
from tables.totals import InstanceTotals
from tables.watermark import low_frontier
from tables.windows import WindowSpec, first_open_start, is_closed, window_sizes

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 0.5
# The input's changes are written at the first tick this long after the last write, before every
# export job, and sooner once this many window keys changed. Not every tick: with many event types
# a key gets a partial from every input partition at every stage-1 flush, and writing its totals
# at each tick was a third of the loop (NOTES.md, Performance). A crash reads this much input again.
PERSIST_INTERVAL_MS = 5_000
PERSIST_KEYS_LIMIT = 50_000
# How many of an export job's windows are written to S3 and Redis at once.
EXPORT_CONCURRENCY = 4
# Rows an export builds between two turns of the event loop (_rows_in_turns): ~0.2 s of work at most.
ROWS_PER_TURN = 10_000


@dataclass(frozen=True, slots=True)
class Step:
    """One closed window of the export job: its rows to export (keys), and whether rules judge it."""

    end_ms: int
    window: str
    start_ms: int
    totals: InstanceTotals | None  # its open totals (None: no row)
    judge: bool
    cursor_after: tuple[int, int] | None  # the window's rule cursor once judged


def plan_steps(due: dict[tuple[str, int], InstanceTotals], cursors: dict[str, tuple[int, int]],
               specs: dict[str, WindowSpec], quiet: dict[str, int], low_ms: int) -> list[Step]:
    """The job's windows in (end, window, start) order: every due window, and every closed window of a
    window with rules from its cursor on, except the rest of a quiet stretch (see the module doc)."""
    steps = []
    judged: set[tuple[str, int]] = set()
    for window, (start, run) in cursors.items():
        spec = specs[window]
        with_rows = sorted(s for (w, s) in due if w == window and s >= start)
        while is_closed(start, spec.size_ms, low_ms):
            if (window, start) in due:
                run = 0
            elif run >= quiet[window]:  # nothing can change until the next window with rows
                following = next((s for s in with_rows if s > start), None)
                start = first_open_start(spec, low_ms) if following is None else following
                continue
            else:
                run += 1
            judged.add((window, start))
            steps.append(Step(start + spec.size_ms, window, start, due.get((window, start)), True,
                              (start + spec.step_ms, run)))
            start += spec.step_ms
    for (window, start), totals in due.items():
        if (window, start) not in judged:
            steps.append(Step(start + specs[window].size_ms, window, start, totals, False, None))
    steps.sort(key=lambda step: (step.end_ms, step.window, step.start_ms))
    return steps


@dataclass(frozen=True, slots=True)
class ExportContext:
    settings: Settings
    topics: Topics
    producer: Producer
    outputs: Outputs
    stats: PipelineStats
    metrics: PipelineMetrics
    state_dir: Path
    clock_ms: Callable[[], int]
    faults: Faults = field(default_factory=Faults)


class ExportStage:
    name = "export"
    tick_interval_s = TICK_INTERVAL_S

    def __init__(self, ctx: ExportContext) -> None:
        self.ctx = ctx
        self.topic = ctx.topics.partials
        self.partitions: dict[int, ExportPartition] = {}

    async def open(self, partitions: Sequence[int], reader: AIOKafkaConsumer) -> dict[int, ExportPartition]:
        ctx = self.ctx
        # Writers first: with transactions, starting one fences the partition's previous owner (agents/ingest.py).
        writers = await open_writers(ctx.producer, f"{ctx.settings.app_id}-{self.name}", partitions)
        stores = {q: PartitionStore(ctx.state_dir / "export" / f"{q:05d}", ctx.topics.export_state, q, writers[q])
                  for q in partitions}
        try:
            states = {q: decode_export_state(await store.restore(reader)) for q, store in stores.items()}
            sent = await last_source_offsets(reader, ctx.topics.alerts, partitions, position=alert_seq)
        except BaseException:
            await close_stores(stores.values())
            raise
        self.partitions = {q: ExportPartition(ctx, q, stores[q], states[q], sent[q]) for q in partitions}
        return dict(self.partitions)

    def active_alerts(self) -> list[tuple[str, str]]:
        """(rule, event_type) of every alert firing in this worker's partitions."""
        return [parse_track_key(key) for part in self.partitions.values()
                for key, track in part.state.tracks.items() if track.firing]

    # -- for the web views ------------------------------------------------------------------------

    def open_rows(self, window: str, event_type: str | None = None, after: tuple[int, str] | None = None,
                  limit: int | None = None) -> list[WindowRow]:
        """This worker's windows of `window` not yet exported, by start then event type: the first `limit`
        (all if None) after the (start, event type) `after`, building no other row."""
        rows = [row for part in self.partitions.values() for row in part.rows(window, event_type, after, limit)]
        rows.sort(key=lambda r: (r.window_start_ms, r.event_type))
        return rows if limit is None else rows[:limit]

    def open_aggregate_rows(self, family: str, key: str) -> list[AggregateRow]:
        """This worker's windows of one key (its key_text) of a spec's family not yet exported, by start."""
        rows: list[AggregateRow] = [row for part in self.partitions.values()  # type: ignore[misc]
                                    for row in part.rows(family, key)]
        return sorted(rows, key=lambda row: row.window_start_ms)

    def open_row(self, key: PartialKey) -> WindowRow | None:
        for part in self.partitions.values():
            row = part.row(key)
            if row is not None:
                return row
        return None


class ExportPartition:
    def __init__(self, ctx: ExportContext, partition: int, store: PartitionStore, state: ExportState,
                 alerts_sent_upto: int = -1) -> None:
        self.ctx = ctx
        self.partition = partition
        self.store = store
        self.state = state
        self.families = {f.name: f for f in families(ctx.settings.pipeline.windows, ctx.settings.pipeline.spec)}
        self.size_ms = window_sizes(tuple(self.families.values()))
        self.specs: dict[str, WindowSpec] = dict(self.families)
        self.rules: tuple[Rule, ...] = ctx.settings.pipeline.alert_rules
        self.quiet = {w: quiet_limit([r for r in self.rules if r.window == w]) for w in {r.window for r in self.rules}}
        self.alerts_sent_upto = alerts_sent_upto  # the highest sequence number in the alerts topic
        partitions = ctx.settings.kafka.topic_partitions
        # The listed types (a spec's rule: keys) this partition judges: those routed to it.
        self._owned_types = {t for rule in self.rules for t in rule.event_types
                             if (partial_partition(t, partitions) if rule.aggregation is None
                                 else key_partition(rule.aggregation, t, partitions)) == partition}
        self.source_partitions = ctx.settings.kafka.topic_partitions
        self._job: asyncio.Task[None] | None = None
        self._crossings: list[tuple[int, int]] = []  # (low frontier, announced at) since the last export
        self._expired: list[tuple[str, int]] = []  # ledger entries to delete from the changelog
        self._stale = self._drop_stale()
        # Read from the input, not yet written (see _persist; the totals' changed slots are in their instances):
        self._frontiers_changed: set[int] = set()
        self._cursors_started: list[str] = []
        self._stored_offset = state.next_offset
        self._persisted_at_ms = ctx.clock_ms()
        self._stale_rule_keys = self._drop_stale_rules()
        low = self._low()
        if low is not None:
            self._stale_rule_keys += [cursor_state_key(window) for window in self._start_cursors(low)]
        log.info("export partition %d: resuming at offset %s, %d open window keys, %d windows in the ledger",
                 partition, state.next_offset, sum(map(len, state.windows.values())), len(state.ledger))

    def _drop_stale(self) -> list[InstanceTotals]:
        """Totals of windows already in the ledger (a crash between the two writes), or no longer configured."""
        state = self.state
        stale = [group for group in state.windows if group in state.ledger or group[0] not in self.size_ms]
        unknown = sorted({window for window, _ in stale if window not in self.size_ms})
        if unknown:
            log.warning("export partition %d: dropping open windows of %s, which WINDOWS no longer lists",
                        self.partition, ", ".join(unknown))
        return [state.windows.pop(group) for group in stale]

    def _drop_stale_rules(self) -> list[bytes]:
        """State of rules no longer in the file, and cursors of windows no rule uses any more."""
        state, names = self.state, {rule.name for rule in self.rules}
        tracks = [key for key in state.tracks if parse_track_key(key)[0] not in names]
        cursors = [window for window in state.cursors if window not in self.quiet]
        for key in tracks:
            del state.tracks[key]
        for window in cursors:
            del state.cursors[window]
        return [track_state_key(key) for key in tracks] + [cursor_state_key(window) for window in cursors]

    def _start_cursors(self, low_ms: int) -> list[str]:
        """Rules judge the windows that close after the low frontier is first known, at the input message
        that makes it known (so a replay starts at the same window), or, for a window whose first rule
        is new, after this restart: windows closed earlier are not judged."""
        started = [window for window in self.quiet if window not in self.state.cursors]
        for window in started:
            self.state.cursors[window] = (first_open_start(self.specs[window], low_ms), 0)
        return started

    # -- what the runner asks ---------------------------------------------------------------------

    def start_offset(self) -> int | None:
        return self.state.next_offset

    def committable_offset(self) -> int | None:
        return self.state.next_offset

    def accepting(self) -> bool:
        return self._job is None or self._job.done()

    async def process(self, records: Sequence[ConsumerRecord]) -> None:
        self._raise_if_failed()
        state = self.state
        for record in records:
            message = decode_stage_message(record.value)
            if isinstance(message, FrontierMessage):
                if message.frontier_ms > state.frontiers.get(message.partition, message.frontier_ms - 1):
                    state.frontiers[message.partition] = message.frontier_ms
                    self._frontiers_changed.add(message.partition)
                    low = low_frontier(state.frontiers, message.source_partitions)
                    if low is not None:
                        self._crossings.append((low, message.announced_at_ms))
                        if len(state.cursors) < len(self.quiet):
                            self._cursors_started += self._start_cursors(low)
                continue
            if isinstance(message, PartialColumns):
                self._merge(message, *message.columns)
                continue
            for columns in message.as_columns():  # an earlier generation's message
                self._merge(columns, *columns.columns)
        state.next_offset = records[-1].offset + 1
        if self._dirty_count() >= PERSIST_KEYS_LIMIT:
            await self._persist()
        self._start_exports()

    def _merge(self, message: PartialColumns, *columns: Sequence) -> None:  # type: ignore[type-arg]
        """One input partition's partials of one window instance (InstanceTotals.merge), unless the
        window was exported (a replay: its totals are final) or is no longer configured."""
        group = (message.window, message.start_ms)
        if group in self.state.ledger or message.window not in self.size_ms:
            self.ctx.stats.partials_after_close += len(columns[0])
            return
        instance = self.state.windows.get(group)
        if instance is None:
            instance = self.state.windows[group] = InstanceTotals(message.window, message.start_ms, message.measures)
        instance.merge(message.partition, *columns)

    def _dirty_count(self) -> int:
        return sum(len(instance.dirty) for instance in self.state.windows.values())

    async def _persist(self) -> None:
        """Write what the input read since the last time changed, then the position past it.

        Every PERSIST_INTERVAL_MS, before an export job, and sooner when many keys changed, not
        per batch: a key gets a partial from every input partition, mostly in different batches,
        and is written once for all of them. What a crash loses of it is read again from the stored
        position (merging a partial again changes nothing)."""
        state, store = self.state, self.store
        self._persisted_at_ms = self.ctx.clock_ms()
        books = state.books
        for instance in state.windows.values():
            if instance.dirty:
                slots, instance.dirty = sorted(instance.dirty), set()
                encode = functools.partial(encode_totals_columns, instance)
                for start, stop, body in encode_in_runs(slots, encode, PACK_BYTES):
                    seq = books.packed(instance.holder, slots[start:stop])
                    await store.put(pack_key(TOTALS_PACK_PREFIX, seq), body)
        await self._delete_packs()
        for p in self._frontiers_changed:
            await store.put(frontier_state_key(p), encode_number(state.frontiers[p]))
        for window in self._cursors_started:
            await store.put(cursor_state_key(window), encode_cursor(state.cursors[window], state.alert_seq, {}))
        self._frontiers_changed, self._cursors_started = set(), []
        if state.next_offset is not None and state.next_offset != self._stored_offset:
            await store.put(POSITION_KEY, encode_export_position(state.next_offset))
            self._stored_offset = state.next_offset

    async def tick(self, now_ms: int) -> None:
        self._raise_if_failed()
        if self._job is None:
            since_ms = now_ms - self._persisted_at_ms
            # < 0: the wall clock went back. Ledger entries are deleted only behind a stored position.
            if since_ms >= PERSIST_INTERVAL_MS or since_ms < 0 or self._expired:
                await self._persist()
            self.state.books.forget(instance.holder for instance in self._stale)
            await self._delete_packs()
            for window, start_ms in self._expired:
                await self.store.put(ledger_state_key(window, start_ms), None)
            for key in self._stale_rule_keys:
                await self._put_rule_key(key)
            self._stale, self._expired, self._stale_rule_keys = [], [], []
            self._start_exports()
        if self._job is None:
            await self.store.commit()

    async def _delete_packs(self) -> None:
        for seq in self.state.books.take_empty():
            await self.store.put(pack_key(TOTALS_PACK_PREFIX, seq), None)

    def _raise_if_failed(self) -> None:
        job = self._job
        if job is not None and job.done():
            self._job = None
            if not job.cancelled() and job.exception() is not None:
                raise job.exception()  # type: ignore[misc]

    # -- closing windows ----------------------------------------------------------------------------

    def _low(self) -> int | None:
        return low_frontier(self.state.frontiers, self.source_partitions)

    def _start_exports(self) -> None:
        low = self._low()
        if low is None or self._job is not None:
            return
        self.ctx.stats.observe_low_frontier(low, self.ctx.clock_ms())
        due = {(window, start): instance for (window, start), instance in self.state.windows.items()
               if is_closed(start, self.size_ms[window], low)}
        steps = plan_steps(due, self.state.cursors, self.specs, self.quiet, low)
        if steps:
            crossings, self._crossings = self._crossings, []
            self._job = asyncio.ensure_future(self._export(steps, crossings))
        self._purge_ledger(low)

    async def _export(self, steps: list[Step], crossings: list[tuple[int, int]]) -> None:
        state, store = self.state, self.store
        # First what the input brought: rule cursors written now must not be overwritten by older ones,
        # and the totals exported are stored before the ledger says they were. Committed before the S3 and
        # Redis writes, which may wait out an outage: no transaction stays open across them.
        await self._persist()
        await store.commit()
        rows_of = [await self._export_rows(step.totals) if step.totals is not None else [] for step in steps]
        # A backlog closes many windows at once: their rows are written side by side (each write is
        # idempotent), while judging and the ledger follow the steps' order, each window after its rows.
        limit = asyncio.Semaphore(EXPORT_CONCURRENCY)
        try:
            async with asyncio.TaskGroup() as group:
                writes = [group.create_task(self._write_window(step, rows, crossings, limit)) if rows else None
                          for step, rows in zip(steps, rows_of, strict=True)]
                for step, rows, write in zip(steps, rows_of, writes, strict=True):
                    if write is not None:
                        if not write.done():
                            # The ledger entries so far committed first: no transaction stays open while a
                            # write may wait out an S3 or Redis outage (the broker would abort it after 60 s).
                            await store.commit()
                        await write
                    if step.judge:
                        await self._judge(step, _by_key(rows))
                    if step.totals is not None:
                        window, start_ms = step.window, step.start_ms
                        await store.put(ledger_state_key(window, start_ms), encode_number(step.end_ms))
                        state.books.forget([step.totals.holder])
                        await self._delete_packs()
                        state.ledger[(window, start_ms)] = step.end_ms
                        del state.windows[(window, start_ms)]
        except BaseExceptionGroup as group_error:
            raise _first_error(group_error) from None
        await store.commit()

    async def _write_window(self, step: Step, rows: list[WindowRow] | AggregateColumns,
                            crossings: list[tuple[int, int]], limit: asyncio.Semaphore) -> None:
        ctx = self.ctx
        family = self.families[step.window]
        async with limit:
            ctx.faults.check("export.write")
            if isinstance(rows, AggregateColumns):
                object_key = await ctx.outputs.export_aggregate(family, self.partition, rows)
            else:
                object_key = await ctx.outputs.export_window(step.window, step.start_ms, self.partition, rows)
        closed_at_ms = next((at for low, at in crossings if low >= step.end_ms), None)
        delay_ms = None if closed_at_ms is None else ctx.clock_ms() - closed_at_ms
        ctx.stats.record_export(len(rows), delay_ms)
        if delay_ms is not None:
            ctx.metrics.window_close_delay.observe(delay_ms / 1000)
        log.info("exported %s window %s: %d keys to S3 %s and Redis, %s after the watermark passed",
                 step.window, iso_utc(step.start_ms), len(rows), object_key,
                 "replayed" if delay_ms is None else f"{delay_ms} ms")

    async def _judge(self, step: Step, rows: dict[str, WindowRow | AggregateRow]) -> None:
        """The rules of one closed window: alerts sent and awaited, then to Redis, then the state."""
        ctx, state = self.ctx, self.state
        alerts, changed = evaluate_window(self.rules, state.tracks, step.window, step.start_ms, step.end_ms, rows,
                                          self._owned_types.__contains__)
        first_seq = state.alert_seq
        sent = []
        for seq, alert in enumerate(alerts, start=first_seq):
            if seq > self.alerts_sent_upto:  # not in the topic yet (a replay skips what was sent)
                ctx.faults.check("alerts.send")
                sent.append(await self.store.writer.send(ctx.topics.alerts, encode_alert(alert), key=alert.id.encode(),
                                                         partition=self.partition, headers=alert_headers(seq)))
                self.alerts_sent_upto = seq
                ctx.metrics.alerts.labels(alert.rule, alert.severity, alert.state).inc()
                log.info("alert %s %s: rule %s, %s %s window %s, value %r (threshold %r)", alert.state,
                         alert.severity, alert.rule, alert.event_type, alert.window, iso_utc(alert.window_start_ms),
                         alert.value, alert.threshold)
        await asyncio.gather(*sent)  # in the topic before the state says they were made
        if alerts:
            await self.store.commit()  # and committed: no transaction stays open across a Redis write
            await ctx.outputs.write_alerts([_redis_alert(alert) for alert in alerts])
        assert step.cursor_after is not None
        state.cursors[step.window] = step.cursor_after
        state.alert_seq = first_seq + len(alerts)
        # The whole judgement in one record first (a crash cannot keep half of it), then the tracks' keys.
        await self.store.put(cursor_state_key(step.window), encode_cursor(
            step.cursor_after, state.alert_seq, {key: state.tracks.get(key) for key in changed}))
        for key in changed:
            await self._put_rule_key(track_state_key(key))
        if alerts:
            await self.store.put(ALERT_SEQ_KEY, encode_number(state.alert_seq))

    async def _put_rule_key(self, key: bytes) -> None:
        """Write a track or cursor key as the state holds it now (deleted if it holds none)."""
        state = self.state
        if key.startswith(track_state_key("")):
            track = state.tracks.get(key[len(track_state_key("")):].decode())
            await self.store.put(key, None if track is None else encode_track(track))
        else:
            cursor = state.cursors.get(key[len(cursor_state_key("")):].decode())
            await self.store.put(key, None if cursor is None else encode_cursor(cursor, state.alert_seq, {}))

    def _purge_ledger(self, low_ms: int) -> None:
        ledger = self.state.ledger
        # Only a replay of this partition's own input from an older position could bring partials of
        # an exported window again, and a position is stored at least every PERSIST_INTERVAL_MS and before
        # the ledger entries are deleted (EXPORT_LEDGER_RETENTION).
        retention_ms = self.ctx.settings.pipeline.ledger_retention_ms
        expired = [entry for entry, end_ms in ledger.items() if end_ms < low_ms - retention_ms]
        for entry in expired:
            del ledger[entry]
        self._expired.extend(expired)

    # -- rows -----------------------------------------------------------------------------------

    async def _export_rows(self, instance: InstanceTotals) -> list[WindowRow] | AggregateColumns:
        """What an export writes of a closed instance: a spec's family's rows as columns, built at once (no
        object per row: 250,000 keys take a fraction of a second); the article's rows built ROWS_PER_TURN at
        a time with a turn of the event loop between: the rows of a window of 250,000 keys built at once held
        the loop for 14 s, past the group's session timeout, so the worker missed its heartbeats, left the
        group and rejoined forever (1M keys, on Kafka). The partition is paused while it exports, so no
        partial changes the instance meanwhile."""
        family = self.families[instance.window]
        if family.aggregation is not None:
            return self._aggregate_columns(family, instance)
        types = instance.types
        chosen = sorted(range(len(types)), key=types.__getitem__)
        rows: list[WindowRow] = []
        for first in range(0, len(chosen), ROWS_PER_TURN):
            rows += self._rows(instance, chosen[first:first + ROWS_PER_TURN])  # each part in order: all in order
            await asyncio.sleep(0)
        return rows

    def _rows(self, instance: InstanceTotals, slots: Sequence[int] | None = None) -> list[WindowRow]:
        """The rows of these slots (all by default), by event type (a spec's family: _aggregate_rows)."""
        types = instance.types
        chosen = sorted(range(len(types)) if slots is None else slots, key=types.__getitem__)
        window, start_ms = instance.window, instance.start_ms
        end_ms = start_ms + self.size_ms[window]
        family = self.families[window]
        if family.aggregation is not None:
            return self._aggregate_rows(family, instance, chosen)  # type: ignore[return-value]
        return [WindowRow(window, start_ms, end_ms, types[slot], totals.count, totals.sum, totals.min, totals.max)
                for slot, totals in zip(chosen, instance.totals(chosen), strict=True)]

    def _aggregate_rows(self, family: Family, instance: InstanceTotals, slots: list[int]) -> list[AggregateRow]:
        return self._aggregate_columns(family, instance, slots).rows()

    def _aggregate_columns(self, family: Family, instance: InstanceTotals,
                           slots: Sequence[int] | None = None) -> AggregateColumns:
        """The rows of these slots (all by default) of a spec's family, as columns in key order."""
        aggregation, types, start_ms = family.aggregation, instance.types, instance.start_ms
        assert aggregation is not None
        layout = aggregation.layout()
        chosen = np.arange(len(types), dtype=np.intp) if slots is None else np.asarray(slots, dtype=np.intp)
        texts = types if slots is None else [types[slot] for slot in slots]
        return AggregateColumns.in_key_order(aggregation.name, family.window, start_ms, start_ms + family.size_ms,
                                             key_part_columns(texts, len(layout.key)),
                                             *instance.measure_columns(chosen), layout)

    def rows(self, window: str, event_type: str | None, after: tuple[int, str] | None = None,
             limit: int | None = None) -> list[WindowRow]:
        """The open rows of `window` (of `event_type` only, if given) by start then type: the first `limit` (all
        if None) after the (start, type) `after`. Only the rows returned are built: a page of 100,000 event
        types costs a sort of their names, not 100,000 rows."""
        rows: list[WindowRow] = []
        instances = sorted(((start, instance) for (name, start), instance in self.state.windows.items()
                            if name == window and (after is None or start >= after[0])), key=lambda item: item[0])
        for start, instance in instances:
            names: list[str] | dict[str, int]
            if event_type is not None:
                names = [event_type] if event_type in instance.index else []
            else:
                names = instance.index
            if after is not None and start == after[0]:
                names = [name for name in names if name > after[1]]
            wanted = None if limit is None else limit - len(rows)
            chosen = sorted(names) if wanted is None or wanted >= len(names) else heapq.nsmallest(wanted, names)
            rows += self._rows(instance, [instance.index[name] for name in chosen])
            if limit is not None and len(rows) >= limit:
                break
        return rows

    def row(self, key: PartialKey) -> WindowRow | None:
        instance = self.state.windows.get((key.window, key.start_ms))
        slot = None if instance is None else instance.index.get(key.event_type)
        return None if slot is None else self._rows(instance, [slot])[0]  # type: ignore[arg-type]

    # -- revocation ------------------------------------------------------------------------------

    async def close(self, *, graceful: bool) -> None:
        job, self._job = self._job, None
        if job is not None and not job.done():
            job.cancel()  # the next owner exports it again: same content
            with contextlib.suppress(asyncio.CancelledError):
                await job
            # Cancelled in the middle, the job leaves the state half changed (totals taken for writing and not
            # written, a window out of the ledger whose deletes were not sent): nothing of it is written, and
            # the next owner reads the input again from the stored position (agents/runner.py, revocation).
            graceful = False
        with contextlib.suppress(Exception):
            if graceful:
                await self._persist()
                await self.store.commit()
        await close_stores([self.store])


def _by_key(rows: list[WindowRow] | AggregateColumns) -> dict[str, WindowRow | AggregateRow]:
    """A closed window's rows by key, as the alert rules take them."""
    if isinstance(rows, AggregateColumns):
        return {key_text(row.key): row for row in rows.rows()}
    return {row.event_type: row for row in rows}


def _first_error(group: BaseExceptionGroup) -> BaseException:
    """The error that failed an export job's task group, as if the job had run in one task."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _redis_alert(alert: Alert) -> tuple[str, str, int, bytes]:
    return alert.state, track_key(alert.rule, alert.event_type), alert.window_end_ms, encode_alert(alert)
