"""Per-partition event-time watermarks with idle-partition handling.

Rule (all times in ms; ``clock`` is the highest ``now_ms`` ever passed in, so a
wall clock stepping backwards cannot move anything backwards):

* Each assigned partition has a *credited event time* ``E`` (``None`` until its
  first event) and ``seen``: the clock at its last event, or at assignment.
* Its estimated event time is ``E + max(0, clock - seen - idle_timeout_ms)``:
  while events keep arriving it is the highest event time seen, so a replay at
  full speed advances purely by event time however old the data is; once the
  partition has been silent for longer than the idle timeout, its event time is
  assumed to advance at wall-clock speed *from where it stopped* (it does not
  jump to the wall clock, so a consumer stall during a replay only advances it
  by the stall length minus the timeout instead of closing every open window).
* ``observe`` folds the accrued idle advance into ``E`` (``E = max(estimate,
  event_ms)``) and resets ``seen``, so the estimate never decreases.
* Partition watermark = estimate - lateness_ms.
* Low watermark = min over assigned partitions that have seen an event. A
  partition that has not seen an event yet blocks it until ``idle_timeout_ms``
  after its assignment and is then ignored. The result is ratcheted: it never
  drops below a previously returned value (e.g. after a new assignment), and
  while blocked the previous value is returned (``None`` if there is none).

A partition that is merely slower (events still arriving, older event times)
keeps holding the low watermark back. Known trade-off: after a replay, a
partition whose data ends far behind the others holds the low watermark back
until its estimate catches up at wall-clock speed; that cannot be told apart
from a stalled consumer, and stalling output is preferred to dropping data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["WatermarkTracker"]

_SNAPSHOT_VERSION = 1
_PARTITION_PREFIX = "partition."


@dataclass(slots=True)
class _PartitionState:
    event_ms: int | None
    seen_ms: int


def _require_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an int, got {type(value).__name__}")
    return value


def _parse_partition_key(key: str) -> tuple[int, str]:
    body = key[len(_PARTITION_PREFIX) :]
    number, sep, field = body.partition(".")
    try:
        partition = int(number)
    except ValueError:
        partition = None
    # Canonical decimal only, so every partition has exactly one spelling.
    if not sep or partition is None or str(partition) != number:
        raise ValueError(f"invalid watermark snapshot key {key!r}")
    if field not in ("assigned", "event_ms"):
        raise ValueError(f"invalid watermark snapshot key {key!r}")
    return partition, field


class WatermarkTracker:
    """Deterministic watermark state for the partitions one worker owns.

    ``now_ms`` is always passed in; callers should pass a wall clock in epoch
    milliseconds (it is compared with event times only through the idle rule).
    """

    __slots__ = ("_lateness_ms", "_idle_timeout_ms", "_partitions", "_clock_ms", "_low_ms")

    def __init__(self, lateness_ms: int, idle_timeout_ms: int) -> None:
        if _require_int(lateness_ms, "lateness_ms") < 0:
            raise ValueError(f"lateness_ms must be >= 0, got {lateness_ms}")
        if _require_int(idle_timeout_ms, "idle_timeout_ms") < 0:
            raise ValueError(f"idle_timeout_ms must be >= 0, got {idle_timeout_ms}")
        self._lateness_ms = lateness_ms
        self._idle_timeout_ms = idle_timeout_ms
        self._partitions: dict[int, _PartitionState] = {}
        self._clock_ms: int | None = None
        self._low_ms: int | None = None

    @property
    def lateness_ms(self) -> int:
        return self._lateness_ms

    @property
    def idle_timeout_ms(self) -> int:
        return self._idle_timeout_ms

    @property
    def assigned(self) -> frozenset[int]:
        return frozenset(self._partitions)

    def _tick(self, now_ms: int) -> int:
        if self._clock_ms is None or now_ms > self._clock_ms:
            self._clock_ms = now_ms
        return self._clock_ms

    def _estimate_ms(self, state: _PartitionState, clock_ms: int) -> int | None:
        if state.event_ms is None:
            return None
        idle_advance_ms = clock_ms - state.seen_ms - self._idle_timeout_ms
        return state.event_ms + max(0, idle_advance_ms)

    def assign(self, partitions: Iterable[int], now_ms: int) -> None:
        """Start owning ``partitions``; already-owned ones keep their state."""
        clock_ms = self._tick(now_ms)
        for partition in partitions:
            if partition not in self._partitions:
                self._partitions[partition] = _PartitionState(event_ms=None, seen_ms=clock_ms)

    def revoke(self, partitions: Iterable[int]) -> None:
        """Forget ``partitions``: another worker may advance them meanwhile."""
        for partition in partitions:
            self._partitions.pop(partition, None)

    def observe(self, partition: int, event_ms: int, now_ms: int) -> None:
        """Record an event; an unknown partition is implicitly assigned."""
        clock_ms = self._tick(now_ms)
        state = self._partitions.get(partition)
        if state is None:
            self._partitions[partition] = _PartitionState(event_ms=event_ms, seen_ms=clock_ms)
            return
        estimate_ms = self._estimate_ms(state, clock_ms)
        state.event_ms = event_ms if estimate_ms is None else max(estimate_ms, event_ms)
        state.seen_ms = clock_ms

    def partition_watermark(self, partition: int, now_ms: int) -> int | None:
        """Watermark of one owned partition; None before its first event.

        Raises KeyError for a partition that is not assigned.
        """
        clock_ms = self._tick(now_ms)
        estimate_ms = self._estimate_ms(self._partitions[partition], clock_ms)
        return None if estimate_ms is None else estimate_ms - self._lateness_ms

    def low_watermark(self, now_ms: int) -> int | None:
        """Ratcheted minimum watermark over owned partitions (see module doc)."""
        clock_ms = self._tick(now_ms)
        candidate_ms: int | None = None
        for state in self._partitions.values():
            estimate_ms = self._estimate_ms(state, clock_ms)
            if estimate_ms is None:
                if clock_ms - state.seen_ms < self._idle_timeout_ms:
                    return self._low_ms  # fresh partition, may still deliver old data
                continue  # idle and never seen: nothing to wait for
            watermark_ms = estimate_ms - self._lateness_ms
            if candidate_ms is None or watermark_ms < candidate_ms:
                candidate_ms = watermark_ms
        if candidate_ms is not None and (self._low_ms is None or candidate_ms > self._low_ms):
            self._low_ms = candidate_ms
        return self._low_ms

    def snapshot(self) -> dict[str, int]:
        """Plain ``dict[str, int]`` (JSON-friendly) for persistence.

        Idle advance accrued up to the current clock is folded into each
        partition's event time, so a restored tracker never reports less.
        """
        data: dict[str, int] = {"version": _SNAPSHOT_VERSION}
        if self._clock_ms is not None:
            data["clock_ms"] = self._clock_ms
        if self._low_ms is not None:
            data["low_watermark_ms"] = self._low_ms
        for partition in sorted(self._partitions):
            state = self._partitions[partition]
            data[f"{_PARTITION_PREFIX}{partition}.assigned"] = 1
            if self._clock_ms is not None:
                estimate_ms = self._estimate_ms(state, self._clock_ms)
                if estimate_ms is not None:
                    data[f"{_PARTITION_PREFIX}{partition}.event_ms"] = estimate_ms
        return data

    def restore(self, state: Mapping[str, int], now_ms: int) -> None:
        """Replace all state with a :meth:`snapshot`; atomic on ValueError.

        Idle timers restart at ``now_ms``: downtime is not idleness, and the
        backlog produced while down must not arrive as late data.
        """
        if state.get("version") != _SNAPSHOT_VERSION:
            raise ValueError(f"unsupported watermark snapshot version {state.get('version')!r}")
        clock_ms: int | None = None
        low_ms: int | None = None
        assigned: set[int] = set()
        event_ms_by_partition: dict[int, int] = {}
        for key, value in state.items():
            number = _require_int(value, f"watermark snapshot value {key!r}")
            if key == "version":
                continue
            if key == "clock_ms":
                clock_ms = number
            elif key == "low_watermark_ms":
                low_ms = number
            elif key.startswith(_PARTITION_PREFIX):
                partition, field = _parse_partition_key(key)
                if field == "assigned":
                    if number != 1:
                        raise ValueError(f"invalid watermark snapshot value for {key!r}")
                    assigned.add(partition)
                else:
                    event_ms_by_partition[partition] = number
            else:
                raise ValueError(f"unknown watermark snapshot key {key!r}")
        orphans = set(event_ms_by_partition) - assigned
        if orphans:
            raise ValueError(f"watermark snapshot has event_ms for unassigned {sorted(orphans)}")

        restart_ms = now_ms if clock_ms is None else max(clock_ms, now_ms)
        self._clock_ms = restart_ms
        self._low_ms = low_ms
        self._partitions = {
            partition: _PartitionState(event_ms=event_ms_by_partition.get(partition), seen_ms=restart_ms)
            for partition in sorted(assigned)
        }
