"""Watermarks (tables/watermark.py): one partition's clock with idle advance, and the low watermark."""

from __future__ import annotations

import random

import pytest

from formats.watermarks import Mark
from tables.watermark import PartitionClock, low_watermark

L = 10_000  # lateness
IDLE = 30_000
T0 = 1_800_000_000_000


def test_watermark_is_the_highest_event_time_minus_lateness() -> None:
    clock = PartitionClock(L, IDLE, None, T0)
    assert clock.mark(T0) == Mark(None, idle=False)
    clock.observe(T0 - 5_000, T0)
    clock.observe(T0 - 9_000, T0 + 1)  # older: no change
    assert clock.mark(T0 + 1) == Mark(T0 - 5_000 - L)
    assert clock.event_ms == T0 - 5_000


def test_a_replay_at_full_speed_advances_by_event_time_only() -> None:
    clock = PartitionClock(L, IDLE, None, T0)
    old = T0 - 86_400_000
    for i in range(100):
        clock.observe(old + i * 1_000, T0 + i)  # 100 s of event time in 100 ms of wall time
    assert clock.mark(T0 + 100).watermark_ms == old + 99_000 - L


def test_a_silent_partition_advances_at_wall_speed_after_the_idle_timeout() -> None:
    clock = PartitionClock(L, IDLE, None, T0)
    clock.observe(T0, T0)
    assert clock.estimate_ms(T0 + IDLE) == T0
    assert clock.estimate_ms(T0 + IDLE + 5_000) == T0 + 5_000
    assert clock.credit_idle(T0 + IDLE + 5_000)
    assert clock.event_ms == T0 + 5_000
    assert clock.estimate_ms(T0 + IDLE + 7_000) == T0 + 7_000  # keeps advancing from there
    clock.observe(T0 + 1_000, T0 + IDLE + 8_000)  # an old event does not move it back
    assert clock.event_ms == T0 + 8_000
    assert not clock.credit_idle(T0 + IDLE + 8_000)


def test_the_estimate_never_decreases_whatever_the_wall_clock_does() -> None:
    rng = random.Random(5)
    clock = PartitionClock(L, IDLE, T0, T0)
    now = T0
    previous = clock.estimate_ms(now)
    for _ in range(2_000):
        now += rng.randint(-60_000, 60_000)  # the wall clock may step backwards
        action = rng.random()
        if action < 0.4:
            clock.observe(T0 + rng.randint(-300_000, 600_000), now)
        elif action < 0.6:
            clock.credit_idle(now)
        estimate = clock.estimate_ms(now)
        assert estimate is not None and previous is not None and estimate >= previous
        previous = estimate


def test_a_reopened_partition_starts_from_its_stored_event_time_and_restarts_its_idle_timer() -> None:
    clock = PartitionClock(L, IDLE, T0, T0 + 3_600_000)  # down for an hour: not idleness
    assert clock.estimate_ms(T0 + 3_600_000) == T0
    assert clock.estimate_ms(T0 + 3_600_000 + IDLE + 1) == T0 + 1


def test_a_partition_without_events_is_idle_after_the_timeout() -> None:
    clock = PartitionClock(L, IDLE, None, T0)
    assert clock.mark(T0 + IDLE - 1) == Mark(None, idle=False)
    assert clock.mark(T0 + IDLE) == Mark(None, idle=True)


def test_low_watermark_waits_for_every_partition() -> None:
    assert low_watermark({0: Mark(5), 1: Mark(7)}, 3) is None
    assert low_watermark({0: Mark(5), 1: Mark(7), 2: Mark(None)}, 3) is None  # may deliver old data
    assert low_watermark({0: Mark(5), 1: Mark(7), 2: Mark(3)}, 3) == 3
    assert low_watermark({0: Mark(5), 1: Mark(7), 2: Mark(None, idle=True)}, 3) == 5
    assert low_watermark({0: Mark(None, idle=True)}, 1) is None
    assert low_watermark({0: Mark(5), 9: Mark(1)}, 1) == 5  # partitions beyond the count do not exist


@pytest.mark.parametrize("partitions", [1, 4])
def test_low_watermark_is_the_minimum(partitions: int) -> None:
    rng = random.Random(partitions)
    for _ in range(200):
        marks = {p: Mark(rng.randint(0, 1_000)) for p in range(partitions)}
        assert low_watermark(marks, partitions) == min(m.watermark_ms for m in marks.values())  # type: ignore[type-var]


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        PartitionClock(-1, IDLE, None, T0)
