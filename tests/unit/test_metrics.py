"""The metrics exposition and the monitor's pure helpers, with state passed as data."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from faust.types import TP
from helpers import MetricKey, metric_samples

from agents.monitor import Monitor, describe_partitions, lag_records, recovery_percent, table_state_bytes
from metrics import PipelineMetrics, directory_bytes


def samples(metrics: PipelineMetrics) -> dict[MetricKey, float]:
    return metric_samples(metrics.exposition().decode())


def test_exposition_reports_live_state_and_measurements() -> None:
    metrics = PipelineMetrics()
    live = metrics.live
    live.consumed = lambda: {0: 10, 3: 5}
    live.dead_letters = lambda: 2
    live.late = lambda: 1
    live.windows_exported = lambda: 4
    live.rows_exported = lambda: 9
    live.watermarks_ms = lambda: {0: 1_500, 3: 2_000}
    live.low_watermark_ms = lambda: 1_000
    live.watermark_age_s = lambda: 0.5
    live.lag = lambda: {("events", 0): 7, ("events", 3): 0}
    live.state_bytes = lambda: {"partials": 4096}
    live.ready = lambda: True
    metrics.window_close_delay.observe(0.6)
    metrics.sink_write_seconds.labels("s3", "aggregates").observe(0.02)
    metrics.sink_errors.labels("redis", "windows").inc()
    metrics.sink_retries.labels("redis", "windows").inc()

    got = samples(metrics)
    assert got[("pipeline_events_consumed_total", (("partition", "0"),))] == 10
    assert got[("pipeline_events_consumed_total", (("partition", "3"),))] == 5
    assert got[("pipeline_dead_letters_total", ())] == 2
    assert got[("pipeline_late_events_total", ())] == 1
    assert got[("pipeline_windows_exported_total", ())] == 4
    assert got[("pipeline_rows_exported_total", ())] == 9
    assert got[("pipeline_watermark_seconds", (("partition", "3"),))] == 2.0
    assert got[("pipeline_low_watermark_seconds", ())] == 1.0
    assert got[("pipeline_low_watermark_age_seconds", ())] == 0.5
    assert got[("pipeline_consumer_lag", (("partition", "0"), ("topic", "events")))] == 7
    assert got[("pipeline_state_bytes", (("table", "partials"),))] == 4096
    assert got[("pipeline_ready", ())] == 1
    assert got[("pipeline_window_close_delay_seconds_count", ())] == 1
    assert got[("pipeline_window_close_delay_seconds_bucket", (("le", "0.75"),))] == 1
    assert got[("pipeline_window_close_delay_seconds_bucket", (("le", "0.5"),))] == 0
    assert got[("pipeline_sink_write_seconds_count", (("operation", "aggregates"), ("sink", "s3")))] == 1
    assert got[("pipeline_sink_errors_total", (("operation", "windows"), ("sink", "redis")))] == 1
    assert got[("pipeline_sink_retries_total", (("operation", "windows"), ("sink", "redis")))] == 1
    # Series of sinks that never failed exist at zero, so "no errors" differs from "no data".
    assert got[("pipeline_sink_errors_total", (("operation", "archive"), ("sink", "s3")))] == 0


def test_a_fresh_worker_reports_not_ready_and_no_watermark() -> None:
    got = samples(PipelineMetrics())
    assert got[("pipeline_ready", ())] == 0
    assert ("pipeline_low_watermark_seconds", ()) not in got


def test_lag_is_end_minus_committed_where_both_are_known_and_never_negative() -> None:
    a, b, c, d = (TP("events", p) for p in range(4))
    assert lag_records({a: 100, b: 50, c: 10, d: None}, {a: 40, b: 51, c: None, d: 3}) == {a: 60, b: 0}


def test_recovery_percent() -> None:
    assert recovery_percent(200, 50) == 75.0
    assert recovery_percent(200, 0) == 100.0
    assert recovery_percent(0, 0) == 100.0
    assert recovery_percent(100, 150) == 0.0


def test_describe_partitions() -> None:
    assert describe_partitions([TP("events", 2), TP("events", 0), TP("app-window-partials", 1)]) == (
        "app-window-partials: 1; events: 0,2")
    assert describe_partitions([]) == "none"


def test_state_bytes_sums_each_tables_partition_directories(tmp_path: Path) -> None:
    for name, size in [("partials-0.db", 100), ("partials-3.db", 50), ("window-totals-1.db", 7),
                       ("partials-notes.txt", 999)]:
        directory = tmp_path / name
        if name.endswith(".db"):
            directory.mkdir()
            (directory / "000001.sst").write_bytes(b"x" * size)
            (directory / "sub").mkdir()
            (directory / "sub" / "LOG").write_bytes(b"y")
        else:
            directory.write_bytes(b"z" * size)
    assert table_state_bytes(tmp_path, ["partials", "window-totals", "frontiers"]) == {
        "partials": 152, "window-totals": 8, "frontiers": 0}
    assert table_state_bytes(tmp_path / "missing", ["partials"]) == {"partials": 0}
    assert directory_bytes(tmp_path / "missing") == 0


class _Recovery:
    def __init__(self) -> None:
        self.completed = asyncio.Event()
        self.remaining = 0

    def active_remaining_total(self) -> int:
        return self.remaining


def test_recovery_progress_is_logged_in_percent(caplog: pytest.LogCaptureFixture) -> None:
    recovery = _Recovery()
    monitor = Monitor(SimpleNamespace(tables=SimpleNamespace(recovery=recovery)), None)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="agents.monitor")
    for remaining in (400, 300, 100):
        recovery.remaining = remaining
        monitor.log_recovery()
    recovery.completed.set()
    monitor.log_recovery()
    monitor.log_recovery()  # once done, nothing more until the next recovery
    assert [r.getMessage() for r in caplog.records] == [
        "recovering tables: 0% (400 of 400 changelog records left)",
        "recovering tables: 25% (300 of 400 changelog records left)",
        "recovering tables: 75% (100 of 400 changelog records left)",
        "recovering tables: 100% (400 changelog records restored)",
    ]
