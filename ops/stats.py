"""Counters of the pipeline's work, shared with the web views and logs."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

DELAY_SAMPLES = 10_000


@dataclass(slots=True)
class PipelineStats:
    consumed: Counter[int] = field(default_factory=Counter)  # per input partition, since start
    input_offsets: dict[int, int] = field(default_factory=dict)  # highest input offset processed
    dead_letters: int = 0
    late: int = 0
    frontiers_ms: dict[int, int] = field(default_factory=dict)  # announced frontier per owned input partition
    # The highest low frontier of this worker's stage-2 partitions (tables/watermark.py: the low
    # watermark over all input partitions as stage 2 received it), and the wall time it last advanced
    # (how fresh the views' answers are).
    low_frontier_ms: int | None = None
    low_frontier_advanced_at_ms: int | None = None
    windows_exported: int = 0
    rows_exported: int = 0
    partials_after_close: int = 0
    sink_retries: int = 0
    archive_buffered: dict[int, int] = field(default_factory=dict)  # per partition: events waiting for their raw file
    export_delays_ms: deque[int] = field(default_factory=lambda: deque(maxlen=DELAY_SAMPLES))
    _reported_total: int = 0
    _reported_at_s: float | None = None

    @property
    def total(self) -> int:
        return sum(self.consumed.values())

    def frontier_over(self, partitions: Iterable[int]) -> int | None:
        """The lowest frontier this worker announced for these input partitions (its own), None until every
        one of them has announced one: a partition without a frontier yet judges nothing late."""
        announced = [self.frontiers_ms.get(p) for p in partitions]
        if not announced or None in announced:
            return None
        return min(ms for ms in announced if ms is not None)

    def forget_partition(self, partition: int) -> None:
        """An input partition went to another worker: its frontier and buffer are no longer ours."""
        self.frontiers_ms.pop(partition, None)
        self.archive_buffered.pop(partition, None)

    def record_export(self, rows: int, delay_ms: int | None) -> None:
        self.windows_exported += 1
        self.rows_exported += rows
        if delay_ms is not None:
            self.export_delays_ms.append(delay_ms)

    def observe_low_frontier(self, low_ms: int, now_ms: int) -> None:
        if self.low_frontier_ms is None or low_ms > self.low_frontier_ms:
            self.low_frontier_ms = low_ms
            self.low_frontier_advanced_at_ms = now_ms

    def delay_percentile_ms(self, fraction: float) -> int | None:
        """Nearest-rank percentile of the recent export delays."""
        if not self.export_delays_ms:
            return None
        ordered = sorted(self.export_delays_ms)
        rank = max(1, -(-len(ordered) * fraction // 1))  # ceil(n * fraction), at least 1
        return ordered[int(rank) - 1]

    def rate_since_last_call(self, now_s: float) -> tuple[int, float]:
        """(total, events/s since the previous call); the first call reports a rate of 0."""
        total = self.total
        previous_s = self._reported_at_s
        rate = 0.0 if previous_s is None else (total - self._reported_total) / max(now_s - previous_s, 1e-9)
        self._reported_total, self._reported_at_s = total, now_s
        return total, rate
