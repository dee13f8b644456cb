from __future__ import annotations

import random

import orjson
import pytest

from tables.watermark import WatermarkTracker
from tables.windows import WindowSpec, is_window_closed, window_starts

LATENESS_MS = 60_000
IDLE_MS = 30_000
NOW_MS = 1_700_000_000_000  # a fixed "current" wall clock
YEAR_2001_MS = 978_307_200_000


def _tracker() -> WatermarkTracker:
    return WatermarkTracker(lateness_ms=LATENESS_MS, idle_timeout_ms=IDLE_MS)


def test_nothing_known_is_none() -> None:
    tracker = _tracker()
    assert tracker.low_watermark(NOW_MS) is None
    tracker.assign([0, 1], NOW_MS)
    assert tracker.low_watermark(NOW_MS) is None
    assert tracker.partition_watermark(0, NOW_MS) is None


def test_partition_watermark_is_max_event_minus_lateness() -> None:
    tracker = _tracker()
    tracker.assign([0], NOW_MS)
    tracker.observe(0, NOW_MS - 5_000, NOW_MS)
    tracker.observe(0, NOW_MS - 90_000, NOW_MS + 1)  # older event: max unchanged
    assert tracker.partition_watermark(0, NOW_MS + 1) == NOW_MS - 5_000 - LATENESS_MS
    assert tracker.low_watermark(NOW_MS + 1) == NOW_MS - 5_000 - LATENESS_MS


def test_unknown_partition_raises_key_error() -> None:
    tracker = _tracker()
    with pytest.raises(KeyError):
        tracker.partition_watermark(3, NOW_MS)


def test_observe_implicitly_assigns() -> None:
    tracker = _tracker()
    tracker.observe(4, 1_000_000, NOW_MS)
    assert tracker.assigned == frozenset({4})
    assert tracker.low_watermark(NOW_MS) == 1_000_000 - LATENESS_MS


def test_slower_partition_holds_low_watermark_back() -> None:
    tracker = _tracker()
    tracker.assign([0, 1], NOW_MS)
    # Both partitions deliver events every second; partition 1 lags 10 minutes.
    for tick in range(120):
        now_ms = NOW_MS + tick * 1_000
        tracker.observe(0, now_ms, now_ms)
        tracker.observe(1, now_ms - 600_000, now_ms)
    end_ms = NOW_MS + 119_000
    assert tracker.partition_watermark(0, end_ms) == end_ms - LATENESS_MS
    assert tracker.low_watermark(end_ms) == end_ms - 600_000 - LATENESS_MS


def test_replay_at_full_speed_closes_windows_by_event_time() -> None:
    tracker = _tracker()
    spec = WindowSpec("tumbling_1m", 60_000, 60_000)
    tracker.assign([0, 1], NOW_MS)
    # One hour of year-2001 data per partition replayed in 3.6 s of wall time.
    for i in range(3_600):
        now_ms = NOW_MS + i
        event_ms = YEAR_2001_MS + i * 1_000
        tracker.observe(0, event_ms, now_ms)
        tracker.observe(1, event_ms - 500, now_ms)
    now_ms = NOW_MS + 3_599
    low_ms = tracker.low_watermark(now_ms)
    expected_ms = YEAR_2001_MS + 3_599_000 - 500 - LATENESS_MS
    assert low_ms == expected_ms
    # Windows up to the watermark are closed, the last two are not, despite
    # the data being 23 years older than the wall clock.
    assert is_window_closed(spec, YEAR_2001_MS + 57 * 60_000, low_ms)
    assert not is_window_closed(spec, YEAR_2001_MS + 58 * 60_000, low_ms)
    assert not is_window_closed(spec, YEAR_2001_MS + 59 * 60_000, low_ms)


def test_idle_partition_advances_with_wall_clock_from_where_it_stopped() -> None:
    tracker = _tracker()
    tracker.observe(0, YEAR_2001_MS, NOW_MS)
    base_ms = YEAR_2001_MS - LATENESS_MS
    assert tracker.partition_watermark(0, NOW_MS + IDLE_MS) == base_ms
    assert tracker.partition_watermark(0, NOW_MS + IDLE_MS + 1) == base_ms + 1
    assert tracker.partition_watermark(0, NOW_MS + IDLE_MS + 45_000) == base_ms + 45_000
    # Advances at wall-clock speed, never jumps to the wall clock itself.
    assert tracker.low_watermark(NOW_MS + IDLE_MS + 45_000) == base_ms + 45_000


def test_windows_close_when_traffic_stops() -> None:
    tracker = _tracker()
    spec = WindowSpec("hopping_1m", 60_000, 30_000)
    last_event_ms = NOW_MS + 12_345  # live traffic: event time == wall time
    tracker.observe(0, last_event_ms, last_event_ms)
    tracker.observe(1, last_event_ms - 200, last_event_ms)
    last_start_ms = window_starts(spec, last_event_ms - 200)[-1]
    end_ms = last_start_ms + 60_000
    assert last_start_ms <= last_event_ms - 200 < end_ms
    # Closes exactly when the idle-advanced slower partition reaches the end:
    # (last_event - 200) + (now - last_event - IDLE) - LATENESS >= end.
    close_at_ms = end_ms + 200 + IDLE_MS + LATENESS_MS
    assert not is_window_closed(spec, last_start_ms, tracker.low_watermark(close_at_ms - 1) or 0)
    assert is_window_closed(spec, last_start_ms, tracker.low_watermark(close_at_ms) or 0)


def test_new_partition_blocks_until_idle_timeout_then_is_ignored() -> None:
    tracker = _tracker()
    tracker.observe(0, NOW_MS, NOW_MS)
    assert tracker.low_watermark(NOW_MS) == NOW_MS - LATENESS_MS
    tracker.assign([1], NOW_MS + 1_000)
    tracker.observe(0, NOW_MS + 20_000, NOW_MS + 20_000)
    # Partition 1 might still deliver old data: the low watermark stays put.
    assert tracker.low_watermark(NOW_MS + 20_000) == NOW_MS - LATENESS_MS
    assert tracker.low_watermark(NOW_MS + 1_000 + IDLE_MS - 1) == NOW_MS - LATENESS_MS
    # Idle timeout after assignment: partition 1 no longer holds it back.
    assert tracker.low_watermark(NOW_MS + 1_000 + IDLE_MS) == NOW_MS + 20_000 - LATENESS_MS


def test_new_partition_with_event_then_constrains() -> None:
    tracker = _tracker()
    tracker.observe(0, NOW_MS, NOW_MS)
    tracker.assign([1], NOW_MS)
    tracker.observe(1, NOW_MS - 10_000, NOW_MS + 5)
    assert tracker.low_watermark(NOW_MS + 5) == NOW_MS - 10_000 - LATENESS_MS


def test_low_watermark_never_goes_backwards_on_new_assignment() -> None:
    tracker = _tracker()
    tracker.observe(0, NOW_MS, NOW_MS)
    high_ms = tracker.low_watermark(NOW_MS)
    tracker.assign([1], NOW_MS)
    tracker.observe(1, NOW_MS - 3_600_000, NOW_MS + 1)  # much older data
    assert tracker.partition_watermark(1, NOW_MS + 1) == NOW_MS - 3_600_000 - LATENESS_MS
    assert tracker.low_watermark(NOW_MS + 1) == high_ms


def test_revoke_slowest_partition_releases_low_watermark() -> None:
    tracker = _tracker()
    tracker.assign([0, 1, 2], NOW_MS)
    tracker.observe(0, NOW_MS, NOW_MS)
    tracker.observe(1, NOW_MS - 50_000, NOW_MS)
    tracker.observe(2, NOW_MS - 10_000, NOW_MS)
    assert tracker.low_watermark(NOW_MS) == NOW_MS - 50_000 - LATENESS_MS
    tracker.revoke([1, 99])  # unknown partitions are ignored
    assert tracker.assigned == frozenset({0, 2})
    assert tracker.low_watermark(NOW_MS) == NOW_MS - 10_000 - LATENESS_MS
    with pytest.raises(KeyError):
        tracker.partition_watermark(1, NOW_MS)


def test_reassigned_partition_starts_fresh() -> None:
    tracker = _tracker()
    tracker.observe(0, NOW_MS, NOW_MS)
    tracker.observe(1, NOW_MS, NOW_MS)
    tracker.revoke([1])
    tracker.assign([1], NOW_MS + 10)
    assert tracker.partition_watermark(1, NOW_MS + 10) is None
    tracker.assign([0], NOW_MS + 10)  # re-assigning an owned partition keeps state
    assert tracker.partition_watermark(0, NOW_MS + 10) == NOW_MS - LATENESS_MS


def test_observe_after_idle_keeps_accrued_advance() -> None:
    tracker = _tracker()
    tracker.observe(0, 1_000_000, NOW_MS)
    idle_now_ms = NOW_MS + IDLE_MS + 100_000
    advanced_ms = tracker.partition_watermark(0, idle_now_ms)
    assert advanced_ms == 1_000_000 + 100_000 - LATENESS_MS
    tracker.observe(0, 1_050_000, idle_now_ms)  # behind the idle estimate
    assert tracker.partition_watermark(0, idle_now_ms) == advanced_ms
    # Active again: no further wall-clock advance until idle once more.
    assert tracker.partition_watermark(0, idle_now_ms + IDLE_MS) == advanced_ms
    tracker.observe(0, 1_200_000, idle_now_ms + IDLE_MS)
    assert tracker.partition_watermark(0, idle_now_ms + IDLE_MS) == 1_200_000 - LATENESS_MS


def test_wall_clock_going_backwards_changes_nothing() -> None:
    tracker = _tracker()
    tracker.observe(0, 1_000_000, NOW_MS)
    late_now_ms = NOW_MS + IDLE_MS + 5_000
    before_ms = tracker.low_watermark(late_now_ms)
    assert before_ms == 1_000_000 + 5_000 - LATENESS_MS
    assert tracker.partition_watermark(0, NOW_MS) == before_ms
    assert tracker.low_watermark(NOW_MS - 10**9) == before_ms


def test_random_operations_are_monotonic_and_deterministic() -> None:
    def run(seed: int) -> list[int | None]:
        rng = random.Random(seed)
        tracker = _tracker()
        trace: list[int | None] = []
        last_low: int | None = None
        last_by_partition: dict[int, int] = {}
        now_ms = NOW_MS
        for _ in range(3_000):
            now_ms += rng.choice([0, 1, 10, 1_000, 20_000, 45_000])
            jitter_ms = rng.choice([0, 0, -5_000])  # occasionally a stepped-back clock
            op = rng.random()
            partition = rng.randrange(4)
            if op < 0.6:
                event_ms = now_ms - rng.randrange(0, 400_000)
                tracker.observe(partition, event_ms, now_ms + jitter_ms)
            elif op < 0.65:
                tracker.assign([partition], now_ms)
            elif op < 0.7:
                tracker.revoke([partition])
                last_by_partition.pop(partition, None)
            for owned in tracker.assigned:
                value = tracker.partition_watermark(owned, now_ms + jitter_ms)
                if value is not None:
                    assert value >= last_by_partition.get(owned, value)
                    last_by_partition[owned] = value
            low = tracker.low_watermark(now_ms + jitter_ms)
            if last_low is not None:
                assert low is not None and low >= last_low
            last_low = low
            trace.append(low)
        return trace

    first = run(1234)
    assert first == run(1234)
    assert first[-1] is not None and len(set(first)) > 100


def test_snapshot_restore_round_trip() -> None:
    tracker = _tracker()
    tracker.assign([0, 1, 2], NOW_MS)
    tracker.observe(0, 5_000_000, NOW_MS)
    tracker.observe(1, 4_000_000, NOW_MS + 1_000)
    snap_now_ms = NOW_MS + IDLE_MS + 10_000  # partition 0 has idled 10 s
    low_ms = tracker.low_watermark(snap_now_ms)
    assert low_ms == 4_000_000 + 9_000 - LATENESS_MS  # partition 1 has idled 9 s
    snapshot = tracker.snapshot()
    assert snapshot == {
        "version": 1,
        "clock_ms": snap_now_ms,
        "low_watermark_ms": low_ms,
        "partition.0.assigned": 1,
        "partition.0.event_ms": 5_010_000,
        "partition.1.assigned": 1,
        "partition.1.event_ms": 4_009_000,
        "partition.2.assigned": 1,
    }
    restored = _tracker()
    restored.restore(orjson.loads(orjson.dumps(snapshot)), NOW_MS + 3_600_000)
    assert restored.assigned == frozenset({0, 1, 2})
    assert restored.snapshot() == {**snapshot, "clock_ms": NOW_MS + 3_600_000}
    # An hour of downtime is not idleness: no jump, idle timers restart.
    assert restored.partition_watermark(0, NOW_MS + 3_600_000) == 5_010_000 - LATENESS_MS
    assert restored.low_watermark(NOW_MS + 3_600_000) == low_ms
    # Partition 2 (never seen) blocks again until idle after the restore.
    restored.observe(1, 9_000_000, NOW_MS + 3_600_000)
    assert restored.low_watermark(NOW_MS + 3_600_000 + IDLE_MS - 1) == low_ms
    assert restored.low_watermark(NOW_MS + 3_600_000 + IDLE_MS) == 5_010_000 - LATENESS_MS


def test_restore_keeps_newer_saved_clock() -> None:
    tracker = _tracker()
    tracker.observe(0, 1_000, NOW_MS)
    restored = _tracker()
    restored.restore(tracker.snapshot(), NOW_MS - 50_000)
    assert restored.snapshot()["clock_ms"] == NOW_MS


def test_empty_snapshot_round_trip() -> None:
    tracker = _tracker()
    assert tracker.snapshot() == {"version": 1}
    tracker.restore({"version": 1}, NOW_MS)
    assert tracker.low_watermark(NOW_MS) is None
    assert tracker.assigned == frozenset()


@pytest.mark.parametrize(
    "snapshot",
    [
        {},
        {"version": 2},
        {"version": 1, "bogus": 1},
        {"version": 1, "clock_ms": True},
        {"version": 1, "clock_ms": 1.5},
        {"version": 1, "partition.x.assigned": 1},
        {"version": 1, "partition.01.assigned": 1},
        {"version": 1, "partition.1": 1},
        {"version": 1, "partition.1.other": 1},
        {"version": 1, "partition.1.assigned": 2},
        {"version": 1, "partition.1.event_ms": 5},
    ],
)
def test_restore_rejects_invalid_snapshot_atomically(snapshot: dict[str, object]) -> None:
    tracker = _tracker()
    tracker.observe(0, 1_000, NOW_MS)
    before = tracker.snapshot()
    with pytest.raises(ValueError):
        tracker.restore(snapshot, NOW_MS)  # type: ignore[arg-type]
    assert tracker.snapshot() == before


@pytest.mark.parametrize(("lateness_ms", "idle_timeout_ms"), [(-1, 0), (0, -1), (True, 0), (0, 1.5)])
def test_constructor_validation(lateness_ms: int, idle_timeout_ms: int) -> None:
    with pytest.raises(ValueError):
        WatermarkTracker(lateness_ms=lateness_ms, idle_timeout_ms=idle_timeout_ms)


def test_zero_idle_timeout_advances_immediately() -> None:
    tracker = WatermarkTracker(lateness_ms=0, idle_timeout_ms=0)
    tracker.assign([1], NOW_MS)  # never seen and already idle: ignored
    tracker.observe(0, 1_000, NOW_MS)
    assert tracker.low_watermark(NOW_MS) == 1_000
    assert tracker.low_watermark(NOW_MS + 250) == 1_250
    assert tracker.lateness_ms == 0 and tracker.idle_timeout_ms == 0
