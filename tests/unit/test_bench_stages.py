"""bench.stages drives both stages over the fakes to the end: every window exported, with the totals
computed from the events, and its counts of keys touched consistent with the input."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bench.spec import KeyShape, Reference
from bench.stages import PARTITIONS, bench_settings, preloaded, run_once

ROOT = Path(__file__).resolve().parents[2]


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


def test_a_spec_run_exports_every_window_exactly() -> None:
    # 200 devices in a minute of event time, 2 readings each: 1,000 events span 2.5 minutes.
    shape = KeyShape.load(ROOT / "deploy" / "aggregations" / "iot.toml", keys=200, events_per_key=2)
    reference = Reference(shape.spec)
    records = preloaded(1_000, None, shape, reference)
    assert sum(len(log) for log in records.values()) == 1_000 + PARTITIONS
    expected = reference.totals()
    assert {aggregation for aggregation, _ in expected} == {"devices", "sites"}
    result = asyncio.run(run_once(bench_settings(shape), records, reference))
    assert result["exact"] is True, result
    assert result["rows"] == sum(rows for rows, _, _ in expected.values())
