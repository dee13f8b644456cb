"""Event time, and the one home of its vocabulary: watermark, low watermark, frontier, low frontier.

All times are epoch milliseconds; the wall clock is passed in (``now_ms``).

* **watermark** (of one input partition): its credited event time minus the allowed lateness
  (``PartitionClock``, below). Its owner publishes it to the watermarks topic (formats/watermarks.py,
  agents/watermarks.py).
* **low watermark**: the minimum of every input partition's watermark (``low_watermark``); unknown
  until every partition has been heard from.
* **frontier** (of one input partition): the low watermark as that partition's stage-1 owner has
  stored and announced it to stage 2 (agents/ingest.py). Windows ending at or before it are closed
  (tables/windows.py has the close rule); a record in one of them is late.
* **low frontier** (of a stage-2 partition): the minimum of the frontiers it has received from
  every input partition (``low_frontier``): stage 2 exports the windows it closes. The
  `pipeline_low_watermark_seconds` metric and the web's `watermark` report it.

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

All partitions: a partition that has never seen an event does not count in the low watermark once
its owner has waited the idle timeout for one (``Mark.idle``): an empty partition must not stall
every window forever; its first events may then be late.
"""

from __future__ import annotations

from collections.abc import Mapping

from formats.watermarks import Mark

__all__ = ["PartitionClock", "low_frontier", "low_watermark"]


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


def low_frontier(frontiers: Mapping[int, int], source_partitions: int) -> int | None:
    """The frontier every input partition has reached, or None until all have reported."""
    if source_partitions < 1 or any(p not in frontiers for p in range(source_partitions)):
        return None
    return min(frontiers[p] for p in range(source_partitions))
