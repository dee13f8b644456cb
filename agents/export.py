"""Stage 2, the export agent: merge partials, close windows, export each exactly once.

It consumes the partials topic, keyed by (window, window_start, event_type), so each
window key has one owner. Per batch it keeps the newest partial of every input
partition (tables.totals), records the input partitions' frontiers, and closes every
window whose end all frontiers have passed:

1. its rows go to S3 (one deterministic object per window start and stage-2 partition,
   overwritten as a whole on replay) and to Redis (idempotent writes);
2. only then is the window entered in the export ledger and its totals deleted, in one
   flush. A crash before that re-exports identical content; a replayed partial for a
   window in the ledger is ignored, so a window is never re-opened with part of its data.

A failed export is retried with backoff and blocks this agent: partials wait in Kafka,
not in memory.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from events import iso_utc
from models import FrontierMessage, decode_stage_message, parse_window_key, window_key
from sinks.rows import WindowRow
from tables.context import writing_partition
from tables.partials import PartialKey
from tables.totals import PartsByPartition, apply_partial, combine, low_frontier

if TYPE_CHECKING:
    from faust import StreamT

    from app import PipelineApp
    from channels import Channels

log = logging.getLogger(__name__)

BATCH_SIZE = 5_000
BATCH_WITHIN_S = 0.2
# Ledger entries outlive their window by this much: a replay older than that is not
# expected (stage 2 commits every few seconds), and the ledger must not grow forever.
LEDGER_RETENTION_MS = 24 * 3_600_000


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class _PartitionState:
    """Stage-2 state of one partials partition."""

    __slots__ = ("totals", "frontiers", "ledger")

    def __init__(self) -> None:
        self.totals: dict[PartialKey, PartsByPartition] = {}
        self.frontiers: dict[int, int] = {}
        self.ledger: dict[tuple[str, int], int] = {}  # (window, start) -> window end


class Exporter:
    def __init__(self, app: PipelineApp, channels: Channels) -> None:
        self.app = app
        self.channels = channels
        self.size_ms = {spec.name: spec.size_ms for spec in app.settings.pipeline.windows}
        self.source_partitions = app.settings.kafka.topic_partitions
        self.states: dict[int, _PartitionState] = {}

    def on_revoked(self, partitions: set[int]) -> None:
        for partition in partitions:
            self.states.pop(partition, None)

    def load(self, partitions: set[int]) -> None:
        """Load the stage-2 state of newly owned partitions from their tables (after recovery)."""
        missing = partitions - set(self.states)
        if not missing:
            return
        fresh = {q: _PartitionState() for q in missing}
        for key, value in self.channels.totals_table.items():
            q, rest = key.split("|", 1)
            if int(q) in fresh:
                fresh[int(q)].totals[parse_window_key(rest)] = {int(p): list(v) for p, v in value.items()}
        for key, value in self.channels.frontier_table.items():
            q, p = key.split("|")
            if int(q) in fresh:
                fresh[int(q)].frontiers[int(p)] = int(value)
        for key, value in self.channels.ledger_table.items():
            q, window, start = key.split("|")
            if int(q) in fresh:
                fresh[int(q)].ledger[(window, int(start))] = int(value)
        self.states.update(fresh)

    async def process(self, batch: list[Any]) -> None:
        by_partition: dict[int, list[Any]] = defaultdict(list)
        for event in batch:
            by_partition[event.message.partition].append(event)
        self.load(set(by_partition))
        for q, events in sorted(by_partition.items()):
            await self._process_partition(q, events)

    async def _process_partition(self, q: int, events: list[Any]) -> None:
        state = self.states[q]
        dirty: set[PartialKey] = set()
        frontiers_changed: set[int] = set()
        crossings: list[tuple[int, int]] = []  # (low frontier, announced at) as it rises
        stats = self.app.stats
        for event in events:
            message = decode_stage_message(event.value)
            if isinstance(message, FrontierMessage):
                if message.frontier_ms > state.frontiers.get(message.partition, message.frontier_ms - 1):
                    state.frontiers[message.partition] = message.frontier_ms
                    frontiers_changed.add(message.partition)
                    low = low_frontier(state.frontiers, message.source_partitions)
                    if low is not None:
                        crossings.append((low, message.announced_at_ms))
                continue
            key = message.key
            if (key.window, key.start_ms) in state.ledger:
                stats.partials_after_close += 1  # a replay of an exported window: already final
                continue
            parts = state.totals.setdefault(key, {})
            if apply_partial(parts, message.partition, message.partial):
                dirty.add(key)
        topic = self.channels.partials.get_topic_name()
        with writing_partition(topic, q):
            for key in dirty:
                self.channels.totals_table[f"{q}|{window_key(key)}"] = state.totals[key]
            for p in frontiers_changed:
                self.channels.frontier_table[f"{q}|{p}"] = state.frontiers[p]
        low = low_frontier(state.frontiers, self.source_partitions)
        if low is not None:
            stats.observe_low_watermark(low, _now_ms())
            await self._close(q, state, low, crossings)

    async def _close(self, q: int, state: _PartitionState, low_ms: int, crossings: list[tuple[int, int]]) -> None:
        due: dict[tuple[str, int], list[PartialKey]] = defaultdict(list)
        for key in state.totals:
            size_ms = self.size_ms.get(key.window)
            if size_ms is None:
                continue  # a window no longer configured stays pending; logged at start
            if key.start_ms + size_ms <= low_ms:
                due[(key.window, key.start_ms)].append(key)
        topic = self.channels.partials.get_topic_name()
        for (window, start_ms), keys in sorted(due.items(), key=lambda item: (item[0][1], item[0][0])):
            end_ms = start_ms + self.size_ms[window]
            rows = []
            for key in sorted(keys, key=lambda k: k.event_type):
                totals = combine(state.totals[key])
                rows.append(WindowRow(window, start_ms, end_ms, key.event_type,
                                      totals.count, totals.sum, totals.min, totals.max))
            object_key = await self.app.outputs.export_window(window, start_ms, q, rows)
            closed_at_ms = next((at for low, at in crossings if low >= end_ms), None)
            delay_ms = None if closed_at_ms is None else _now_ms() - closed_at_ms
            self.app.stats.record_export(len(rows), delay_ms)
            if delay_ms is not None:
                self.app.metrics.window_close_delay.observe(delay_ms / 1000)
            log.info("exported %s window %s: %d event types to S3 %s and Redis, %s after the watermark passed",
                     window, iso_utc(start_ms), len(rows), object_key,
                     "replayed" if delay_ms is None else f"{delay_ms} ms")
            with writing_partition(topic, q):
                self.channels.ledger_table[f"{q}|{window}|{start_ms}"] = end_ms
                for key in keys:
                    del self.channels.totals_table[f"{q}|{window_key(key)}"]
            state.ledger[(window, start_ms)] = end_ms
            for key in keys:
                del state.totals[key]
        self._purge_ledger(q, state, low_ms)

    def _purge_ledger(self, q: int, state: _PartitionState, low_ms: int) -> None:
        expired = [entry for entry, end_ms in state.ledger.items() if end_ms < low_ms - LEDGER_RETENTION_MS]
        if not expired:
            return
        with writing_partition(self.channels.partials.get_topic_name(), q):
            for window, start_ms in expired:
                del self.channels.ledger_table[f"{q}|{window}|{start_ms}"]
                del state.ledger[(window, start_ms)]


def register(app: PipelineApp, channels: Channels) -> Exporter:
    exporter = Exporter(app, channels)

    async def export_agent(stream: StreamT[bytes]) -> None:
        async for batch in stream.take_events(BATCH_SIZE, within=BATCH_WITHIN_S):
            await exporter.process(batch)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        topic = channels.partials.get_topic_name()
        exporter.on_revoked({tp.partition for tp in revoked if tp.topic == topic})

    app.agent(channels.partials, name="export")(export_agent)
    app.on_partitions_revoked.connect(on_revoked)
    return exporter
