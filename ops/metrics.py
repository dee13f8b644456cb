"""Prometheus metrics of one worker, in a registry of its own (no global state).

Two kinds:
- measured as things happen (histograms and counters below): window close delay and
  sink write latency, errors and retries;
- read at scrape time from the pipeline's live state (`PipelineCollector`): events
  consumed, dead letters, late events, watermarks, consumer lag, RocksDB state size.
  Reading at scrape time keeps the hot path free of metric calls.

The batch job (`faust -A app batch`) is a process of its own that Prometheus does not scrape:
it adds each run to a status hash in Redis (sinks/redis_store.py `batch:status`), which every
worker reads on a timer (monitor.py) and exports as `pipeline_batch_*`. Every worker reports
the same values: aggregate them with max(), not sum().
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from formats.batch import BatchStatus

__all__ = ["CONTENT_TYPE_LATEST", "LiveState", "PipelineMetrics", "directory_bytes"]

# Export delays run from a few hundred ms (batching) to minutes (a store outage).
CLOSE_DELAY_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# Every (sink, operation) the pipeline writes, listed up front so that their series exist
# (at 0) before the first failure: a dashboard can tell "no errors" from "no data".
SINK_OPERATIONS = (("s3", "archive"), ("s3", "aggregates"), ("redis", "windows"), ("redis", "alerts"))
SINK_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(slots=True)
class LiveState:
    """Callables the collector reads at scrape time; each returns current values."""

    consumed: Callable[[], Mapping[int, int]] = dict
    dead_letters: Callable[[], int] = int
    late: Callable[[], int] = int
    windows_exported: Callable[[], int] = int
    rows_exported: Callable[[], int] = int
    archive_buffered: Callable[[], int] = int
    watermarks_ms: Callable[[], Mapping[int, int]] = dict  # per owned input partition
    low_frontier_ms: Callable[[], int | None] = lambda: None
    watermark_age_s: Callable[[], float | None] = lambda: None
    lag: Callable[[], Mapping[tuple[str, int], int]] = dict  # (topic, partition) -> records
    state_bytes: Callable[[], Mapping[str, int]] = dict  # table -> bytes on disk
    ready: Callable[[], bool] = lambda: False
    active_alerts: Callable[[], Iterable[tuple[str, str]]] = list  # (rule, event_type) firing in this worker
    batch_status: Callable[[], BatchStatus | None] = lambda: None  # the batch job's, last read from Redis


# The batch status hash's counters (formats/batch.py BATCH_COUNTERS) as exported, with their help.
BATCH_COUNTER_FAMILIES = (
    ("periods_computed", "pipeline_batch_periods_computed", "Hourly and daily rollups computed by the batch job."),
    ("windows_restated", "pipeline_batch_windows_restated", "Speed-layer windows the batch job restated with "
                                                            "late events."),
    ("rows_restated", "pipeline_batch_rows_restated", "Window rows (one per event type) the batch job restated."),
    ("objects_written", "pipeline_batch_objects_written", "Objects the batch job wrote to S3 (rollups, restated "
                                                          "windows, manifests)."),
    ("objects_skipped", "pipeline_batch_objects_skipped", "Foreign or unreadable objects under events/ the batch "
                                                          "job skipped (counted by each run that meets them)."),
)


class PipelineCollector(Collector):
    def __init__(self, live: LiveState) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        live = self.live
        consumed = CounterMetricFamily("pipeline_events_consumed", "Input records consumed, per input partition, "
                                       "since the worker started.", labels=["partition"])
        for partition, count in sorted(live.consumed().items()):
            consumed.add_metric([str(partition)], count)
        yield consumed
        yield CounterMetricFamily("pipeline_dead_letters", "Records sent to the dead-letter topic.",
                                  value=live.dead_letters())
        yield CounterMetricFamily("pipeline_late_events", "Events whose window had already closed.",
                                  value=live.late())
        yield CounterMetricFamily("pipeline_windows_exported", "Closed windows written to S3 and Redis.",
                                  value=live.windows_exported())
        yield CounterMetricFamily("pipeline_rows_exported", "Aggregate rows written to S3 and Redis.",
                                  value=live.rows_exported())
        yield GaugeMetricFamily("pipeline_archive_buffered_records",
                                "Valid events waiting for their raw archive file.", value=live.archive_buffered())
        watermarks = GaugeMetricFamily("pipeline_watermark_seconds", "Event-time watermark of each input "
                                       "partition this worker owns (Unix time).", labels=["partition"])
        for partition, watermark_ms in sorted(live.watermarks_ms().items()):
            watermarks.add_metric([str(partition)], watermark_ms / 1000)
        yield watermarks
        low_ms = live.low_frontier_ms()
        if low_ms is not None:
            yield GaugeMetricFamily("pipeline_low_watermark_seconds", "Low watermark over all input partitions: "
                                    "windows ending before it are closed (Unix time).", value=low_ms / 1000)
        age_s = live.watermark_age_s()
        if age_s is not None:
            yield GaugeMetricFamily("pipeline_low_watermark_age_seconds",
                                    "Wall time since the low watermark last advanced.", value=age_s)
        lag = GaugeMetricFamily("pipeline_consumer_lag", "Records not yet processed (processing lag): the high "
                                "watermark of the last fetch minus the next offset to process, per assigned partition "
                                "(sampled every few seconds; commit lag is the consumer group's).",
                                labels=["topic", "partition"])
        for (topic, partition), records in sorted(live.lag().items()):
            lag.add_metric([topic, str(partition)], records)
        yield lag
        state = GaugeMetricFamily("pipeline_state_bytes", "Size on disk of the RocksDB state, per table.",
                                  labels=["table"])
        for table, size in sorted(live.state_bytes().items()):
            state.add_metric([table], size)
        yield state
        active = GaugeMetricFamily("pipeline_alert_active", "1 per alert firing now in this worker's stage-2 "
                                   "partitions (a resolved alert's series disappears).", labels=["rule", "event_type"])
        for rule, event_type in sorted(live.active_alerts()):
            active.add_metric([rule, event_type], 1)
        yield active
        yield GaugeMetricFamily("pipeline_ready", "1 once partitions are assigned and tables recovered.",
                                value=1 if live.ready() else 0)
        status = live.batch_status()
        if status is not None:
            yield from batch_families(status)


def batch_families(status: BatchStatus) -> Iterator[Metric]:
    """The batch job's status hash as metrics; a time no run has set yet has no series."""
    for value_ms, name, help_text in (
            (status.last_sealed_hour_ms, "pipeline_batch_last_sealed_hour_seconds",
             "Start of the newest hour the batch job found sealed (Unix time)."),
            (status.last_success_ms, "pipeline_batch_last_success_seconds",
             "End of the batch job's last successful run (Unix time)."),
            (status.last_failure_ms, "pipeline_batch_last_failure_seconds",
             "End of the batch job's last failed run (Unix time)."),
            (status.duration_ms, "pipeline_batch_duration_seconds", "Wall duration of the batch job's last "
                                                                   "successful run.")):
        if value_ms is not None:
            yield GaugeMetricFamily(name, help_text, value=value_ms / 1000)
    runs = CounterMetricFamily("pipeline_batch_runs", "Runs of the batch job that ended, by outcome.",
                               labels=["outcome"])
    runs.add_metric(["ok"], status.counters.get("runs", 0))
    runs.add_metric(["failed"], status.counters.get("runs_failed", 0))
    yield runs
    for field, name, help_text in BATCH_COUNTER_FAMILIES:
        yield CounterMetricFamily(name, help_text, value=status.counters.get(field, 0))


class PipelineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.live = LiveState()
        self.registry.register(PipelineCollector(self.live))
        self.window_close_delay = Histogram(
            "pipeline_window_close_delay_seconds",
            "Wall time from the low watermark passing a window's end to its rows being in S3 and in Redis.",
            buckets=CLOSE_DELAY_BUCKETS_S, registry=self.registry)
        self.sink_write_seconds = Histogram(
            "pipeline_sink_write_seconds", "Duration of one sink write attempt.", ["sink", "operation"],
            buckets=SINK_LATENCY_BUCKETS_S, registry=self.registry)
        self.sink_errors = Counter(
            "pipeline_sink_errors", "Failed sink write attempts.", ["sink", "operation"], registry=self.registry)
        self.sink_retries = Counter(
            "pipeline_sink_retries", "Sink writes retried after a transient failure.", ["sink", "operation"],
            registry=self.registry)
        self.alerts = Counter(
            "pipeline_alerts", "Alerts sent to the alerts topic by this worker, per rule, severity and state.",
            ["rule", "severity", "state"], registry=self.registry)
        for sink, operation in SINK_OPERATIONS:
            for family in (self.sink_write_seconds, self.sink_errors, self.sink_retries):
                family.labels(sink, operation)

    def declare_rules(self, rules: Iterable[tuple[str, str]]) -> None:
        """Create each (rule, severity)'s series at 0, so that "no alert" is not "no data"."""
        for rule, severity in rules:
            for state in ("firing", "resolved"):
                self.alerts.labels(rule, severity, state)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def directory_bytes(path: Path) -> int:
    """Total size of the regular files under `path` (0 if it does not exist)."""
    total = 0
    for child in path.rglob("*"):
        try:
            if child.is_file():
                total += child.stat().st_size
        except OSError:
            continue  # RocksDB deletes obsolete files while we walk
    return total
