"""Counters of what the ingest agent consumed, shared with the web views and logs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    consumed: Counter[int] = field(default_factory=Counter)  # per input partition
    _reported_total: int = 0
    _reported_at_s: float | None = None

    @property
    def total(self) -> int:
        return sum(self.consumed.values())

    def rate_since_last_call(self, now_s: float) -> tuple[int, float]:
        """(total, events/s since the previous call); the first call reports a rate of 0."""
        total = self.total
        previous_s = self._reported_at_s
        rate = 0.0 if previous_s is None else (total - self._reported_total) / max(now_s - previous_s, 1e-9)
        self._reported_total, self._reported_at_s = total, now_s
        return total, rate
