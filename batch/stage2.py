"""What stage 2 has exported, read from its changelog: the batch layer never writes a window before it.

A window is exported by every stage-2 partition once, in each partition's durable state, its
frontiers have all passed the window's end (then every partial of it was read, as stage 1 sends
its partials before its frontier) and no totals of it are left (an export deletes them only after
its S3 and Redis writes). From then on stage 2 never writes the window again: it is in the export
ledger, which ignores replayed partials until EXPORT_LEDGER_RETENTION after the window's end, and
partials of it older than the stored input position are never read again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from formats.lake import HOUR_MS
from tables.changelog import read_items, reader
from tables.state import decode_export_state
from tables.watermark import low_frontier
from tables.windows import is_closed

__all__ = ["Stage2View", "read_stage2"]


@dataclass(frozen=True, slots=True)
class Stage2View:
    low_ms: int | None  # the lowest frontier over stage-2 partitions; None if one has none yet
    pending: frozenset[tuple[str, int]]  # (window, start) with totals not yet exported

    def exported(self, hour_ms: int, end_ms: int) -> bool:
        """Every window starting in the hour and ending by end_ms is exported by every partition."""
        if not is_closed(hour_ms, end_ms - hour_ms, self.low_ms):  # the span [hour, end) is not closed
            return False
        return not any(hour_ms <= start < hour_ms + HOUR_MS for _window, start in self.pending)


def view_of(states: Mapping[int, dict[bytes, bytes]], partitions: int, source_partitions: int) -> Stage2View:
    """The view from each stage-2 partition's state (key -> value, as tables/store.py keeps it)."""
    lows: list[int | None] = []
    pending: set[tuple[str, int]] = set()
    for partition in range(partitions):
        state = decode_export_state(states.get(partition, {}))
        lows.append(low_frontier(state.frontiers, source_partitions))
        pending.update(state.windows)
    low = None if any(value is None for value in lows) else min(v for v in lows if v is not None)
    return Stage2View(low, frozenset(pending))


async def read_stage2(client_options: Mapping[str, Any], *, export_state: str, partitions: int,
                      source_partitions: int) -> Stage2View:
    """Read stage 2's changelog from its beginning (groupless, read-only). It is compacted on a real
    Kafka, so this reads about one record per open window key and ledger entry."""
    consumer = reader(client_options)
    await consumer.start()
    try:
        if export_state not in await consumer.topics():
            return Stage2View(None, frozenset())
        states = await read_items(consumer, export_state, range(partitions))
        return view_of(states, partitions, source_partitions)
    finally:
        await consumer.stop()
