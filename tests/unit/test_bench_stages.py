"""bench.stages drives both stages over the fakes to the end: every window exported, with the totals
computed from the events, and its counts of keys touched consistent with the input."""

from __future__ import annotations

import asyncio

from bench.stages import PARTITIONS, bench_settings, preloaded, run_once


def test_a_small_run_exports_every_window_exactly_and_counts_its_keys() -> None:
    records = preloaded(3_000, 40)
    assert sorted(records) == list(range(PARTITIONS))
    assert sum(len(log) for log in records.values()) == 3_000 + PARTITIONS  # the events and the sentinels
    result = asyncio.run(run_once(bench_settings(), records))
    # 3 s of event time in 60 s windows: every event in one tumbling and two hopping windows, 40 types.
    windows = 40 * (1 + 2)
    assert result["windows"] == f"exact ({windows} windows), {windows} rows"
    assert result["exact"] is True
    # Each stage-1 partition sends every key it holds at least once, and writes it to its packs as often.
    assert windows <= result["partials_sent"] <= windows * PARTITIONS * 2
    assert result["stage1_pack_entries"] == result["partials_sent"]
    assert result["events_per_cpu_s"] > 0
