"""deploy/: the Grafana dashboard is importable JSON on a `DS_PROMETHEUS` input, the
dashboard and the alert rules read only metrics the worker exports (or Prometheus' own), and
the rules' unit tests have every alert both firing and not. Whether the PromQL parses and the
unit tests pass is for the real Prometheus and promtool: tests/integration/test_prometheus_rules.py."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from prometheus_server import DASHBOARD, RULES, RULES_TESTS

from formats.batch import BATCH_COUNTERS, BatchStatus
from ops.metrics import PipelineMetrics

PROMETHEUS_OWN = {"up", "ALERTS"}
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def _exported_series_names() -> set[str]:
    """Every sample name /metrics can carry, with every labelled family given one series."""
    metrics = PipelineMetrics()
    live = metrics.live
    live.consumed = lambda: {0: 1}
    live.watermarks_ms = lambda: {0: 1}
    live.low_frontier_ms = lambda: 1
    live.watermark_age_s = lambda: 0.0
    live.lag = lambda: {("events", 0): 1}
    live.state_bytes = lambda: {"ingest": 1}
    status = BatchStatus(last_success_ms=1, last_failure_ms=1, duration_ms=1, last_sealed_hour_ms=1,
                         counters=dict.fromkeys(BATCH_COUNTERS, 1))
    live.batch_status = lambda: status
    return {sample.name for family in text_string_to_metric_families(metrics.exposition().decode())
            for sample in family.samples}


def _names_in(expr: str) -> set[str]:
    expr = re.sub(r'"[^"]*"', '""', expr)  # label values are not metric names
    return set(re.findall(r"\b(pipeline_[a-z_]+|up|ALERTS)\b", expr))


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def test_the_dashboard_is_importable_on_a_prometheus_input() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["__inputs"] == [{"name": "DS_PROMETHEUS", "label": "Prometheus",
                                      "description": "The Prometheus that scrapes the pipeline's workers",
                                      "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}]
    assert dashboard["id"] is None and dashboard["uid"] == "events-pipeline"  # import creates it, by uid
    panels = _panels(dashboard)
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
    for variable in dashboard["templating"]["list"]:
        assert variable["datasource"] == DATASOURCE, variable["name"]


def test_the_dashboard_shows_what_an_operator_needs() -> None:
    exprs = " ".join(target["expr"] for panel in _panels(json.loads(DASHBOARD.read_text()))
                     for target in panel["targets"])
    for needed in ("rate(pipeline_events_consumed_total", "pipeline_consumer_lag", "pipeline_low_watermark_seconds",
                   "pipeline_low_watermark_age_seconds", "histogram_quantile(0.5, sum by (le) (rate("
                   "pipeline_window_close_delay_seconds_bucket", "histogram_quantile(0.99, sum by (le) (rate("
                   "pipeline_window_close_delay_seconds_bucket", "rate(pipeline_dead_letters_total",
                   "rate(pipeline_late_events_total", "rate(pipeline_sink_errors_total",
                   "rate(pipeline_sink_retries_total", "pipeline_state_bytes", 'ALERTS{alertstate="firing"',
                   "time() - max(pipeline_batch_last_sealed_hour_seconds", "pipeline_batch_runs_total",
                   "pipeline_batch_rows_restated_total"):
        assert needed in exprs, needed


def test_dashboard_and_rules_read_only_exported_metrics() -> None:
    exported = _exported_series_names() | PROMETHEUS_OWN
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in _panels(dashboard) for target in panel["targets"]]
    exprs += [variable["definition"] for variable in dashboard["templating"]["list"]]
    rules = RULES.read_text()
    exprs += re.findall(r"(?m)^\s+expr: (.+)$", rules) + re.findall(r"(?ms)^\s+expr: \|-\n(.*?)\n\s+for:", rules)
    used = set().union(*(_names_in(expr) for expr in exprs))
    assert used - exported == set()
    assert len(used) >= 14  # the scan found the expressions


def test_the_unit_tests_cover_every_alert_firing_and_not() -> None:
    firing, quiet = set(), set()
    alertname = None
    for line in RULES_TESTS.read_text().splitlines():
        if found := re.match(r"\s+alertname: (\w+)", line):
            alertname = found.group(1)
        elif found := re.match(r"\s+exp_alerts:(.*)", line):
            assert alertname is not None
            (quiet if found.group(1).strip() == "[]" else firing).add(alertname)
            alertname = None
    alerts = set(re.findall(r"(?m)^\s*- alert: (\w+)$", RULES.read_text()))
    assert len(alerts) == 7
    assert firing == alerts
    assert quiet == alerts
