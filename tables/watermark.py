"""Event-time watermarks: one input partition's, and the low watermark over all of them.

All times are epoch milliseconds; the wall clock is passed in (``now_ms``).

One partition (``PartitionClock``), owned by the stage-1 worker of that partition:

* ``event_ms`` is the partition's *credited* event time: the highest event time seen,
  plus any idle advance already credited. It is part of the partition's durable state
  (agents/ingest.py), so a restart or a new owner starts from it, never from another
  partition's. ``None`` until the partition's first event.
* While events keep arriving the estimate is ``event_ms``: a replay at full speed advances
  purely by event time, however old the data. Once the partition has been silent for
  longer than the idle timeout, its event time is assumed to advance at wall-clock speed
  *from where it stopped*: ``event_ms + (now - seen - idle_timeout)``. ``observe`` and
  ``credit_idle`` fold that advance into ``event_ms``, so the estimate never decreases.
  Downtime is not idleness: a reopened partition starts its idle timer at open.
* Watermark = estimate - lateness.

All partitions (``low_watermark``): each partition's owner publishes its watermark
(agents/watermarks.py). The low watermark is their minimum, and unknown until every
partition has been heard from. A partition that has never seen an event does not count
once its owner has waited the idle timeout for one (``Mark.idle``): an empty partition
must not stall every window forever; its first events may then be late.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Mark", "PartitionClock", "low_watermark"]


@dataclass(frozen=True, slots=True)
class Mark:
    """What a partition's owner publishes: its watermark, or None before its first event."""

    watermark_ms: int | None
    idle: bool = False  # no event yet, and none for the idle timeout: leave it out of the minimum


class PartitionClock:
    """The event time of one input partition (see the module doc)."""

    __slots__ = ("lateness_ms", "idle_timeout_ms", "event_ms", "_seen_ms", "_opened_ms", "_clock_ms")

    def __init__(self, lateness_ms: int, idle_timeout_ms: int, event_ms: int | None, now_ms: int) -> None:
        if lateness_ms < 0 or idle_timeout_ms < 0:
            raise ValueError(f"lateness and idle timeout must be >= 0, got {lateness_ms}, {idle_timeout_ms}")
        self.lateness_ms = lateness_ms
        self.idle_timeout_ms = idle_timeout_ms
        self.event_ms = event_ms
        self._seen_ms = now_ms
        self._opened_ms = now_ms
        self._clock_ms = now_ms

    def _tick(self, now_ms: int) -> int:
        # A wall clock stepping backwards must not move anything backwards.
        if now_ms > self._clock_ms:
            self._clock_ms = now_ms
        return self._clock_ms

    def estimate_ms(self, now_ms: int) -> int | None:
        if self.event_ms is None:
            return None
        clock_ms = self._tick(now_ms)
        return self.event_ms + max(0, clock_ms - self._seen_ms - self.idle_timeout_ms)

    def observe(self, event_ms: int, now_ms: int) -> None:
        """The highest event time of a batch of this partition's events."""
        estimate = self.estimate_ms(now_ms)
        self.event_ms = event_ms if estimate is None else max(estimate, event_ms)
        self._seen_ms = self._tick(now_ms)

    def credit_idle(self, now_ms: int) -> bool:
        """Fold the idle advance into event_ms (before it is stored); True if it moved."""
        estimate = self.estimate_ms(now_ms)
        if estimate is None or estimate == self.event_ms:
            return False
        self.event_ms = estimate
        self._seen_ms = self._tick(now_ms) - self.idle_timeout_ms  # keep advancing from here at wall speed
        return True

    def mark(self, now_ms: int) -> Mark:
        """The partition's watermark as credited (call credit_idle first to include idle advance)."""
        if self.event_ms is None:
            return Mark(None, idle=self._tick(now_ms) - self._opened_ms >= self.idle_timeout_ms)
        return Mark(self.event_ms - self.lateness_ms)


def low_watermark(marks: Mapping[int, Mark], partitions: int) -> int | None:
    """The minimum watermark over partitions 0..partitions-1 (see the module doc)."""
    low: int | None = None
    for partition in range(partitions):
        mark = marks.get(partition)
        if mark is None:
            return None  # not heard from yet
        if mark.watermark_ms is None:
            if mark.idle:
                continue
            return None  # may still deliver old data
        if low is None or mark.watermark_ms < low:
            low = mark.watermark_ms
    return low
