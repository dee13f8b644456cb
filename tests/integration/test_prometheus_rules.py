"""The shipped operator alerting (deploy/) against Debian's real promtool and Prometheus:
the rules and scrape config pass `promtool check`, the rules' unit tests pass, and every
PromQL expression of the rules and of the Grafana dashboard parses (a real Prometheus answers
400 to one that does not)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from prometheus_server import (
    DASHBOARD,
    JOB,
    PROMTOOL,
    RULES,
    RULES_TESTS,
    SCRAPE_CONFIG,
    PrometheusServer,
    requires_prometheus,
)

pytestmark = requires_prometheus
ALERT_NAMES = re.findall(r"(?m)^\s*- alert: (\w+)$", RULES.read_text())
# Grafana's variables, as the dashboard's defaults would fill them in.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$job": JOB, "$instance": ".*"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, check=False)


def test_promtool_checks_the_rules_and_the_scrape_config() -> None:
    assert len(ALERT_NAMES) == 7
    rules = _promtool("check", "rules", str(RULES))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(ALERT_NAMES)} rules found" in rules.stdout
    config = _promtool("check", "config", str(SCRAPE_CONFIG))  # also loads alerts.yml through rule_files
    assert config.returncode == 0, config.stdout + config.stderr


def test_promtool_runs_the_rules_unit_tests() -> None:
    result = _promtool("test", "rules", str(RULES_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _dashboard_queries(node: Any) -> list[str]:
    """Every panel target's `expr`, and the selector inside each variable's label_values()."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append(value)
            elif key == "definition" and isinstance(value, str):
                inner = re.fullmatch(r"label_values\((.+), \w+\)", value)
                assert inner is not None, value
                found.append(inner.group(1))
            else:
                found.extend(_dashboard_queries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_queries(item))
    return found


def _filled_in(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
    return expr


def test_every_promql_expression_parses_in_a_real_prometheus(tmp_path: Path) -> None:
    dashboard_exprs = _dashboard_queries(json.loads(DASHBOARD.read_text()))
    assert len(dashboard_exprs) >= 20
    with PrometheusServer(tmp_path / "prometheus", rules=RULES.read_text()) as prometheus:
        # The control: a query that does not parse is refused as bad data.
        status, body = prometheus.query("sum(rate(pipeline_events_consumed_total[5m])")
        assert (status, body["errorType"]) == (400, "bad_data")
        # Prometheus loaded the shipped file (a rule that did not parse would have stopped it).
        rules = {rule["name"]: rule for rule in prometheus.rules()}
        assert sorted(rules) == sorted(ALERT_NAMES)
        for name, rule in rules.items():
            assert rule["labels"]["severity"] in ("critical", "warning"), name
            assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        # The rules exactly as they are evaluated, and every dashboard query.
        for expr in [rule["query"] for rule in rules.values()] + [_filled_in(e) for e in dashboard_exprs]:
            status, body = prometheus.query(expr)
            assert status == 200, f"{expr}: {body}"
