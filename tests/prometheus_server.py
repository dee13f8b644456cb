"""A Prometheus server of a test's own (Debian's `prometheus`), and the shipped deploy/ files.

The server listens on a free port of 127.0.0.1 and keeps its data under the test's tmp_path,
so a Prometheus the package may have started as a service is never involved.
"""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from devstack.ports import free_port_block
from ops.process import ManagedProcess

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULES_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "pipeline.json"
JOB = "pipeline"  # the job name PipelineWorkerDown selects

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
# Checked before any fixture runs, so a machine without Prometheus does not start a stack for nothing.
requires_prometheus = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason=(
    "prometheus/promtool are not installed: `make test` installs Debian's prometheus package with "
    "apt-get when run as root; without them the alert rules cannot be checked"))
READY_DEADLINE_S = 30.0  # an empty TSDB starts in about a second


class PrometheusServer:
    """`prometheus` scraping `targets` as job `pipeline` every `interval_s`, with one rules file."""

    def __init__(self, data_dir: Path, *, rules: str, targets: Sequence[str] = (), interval_s: int = 1) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port_block(1)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.rules_path = data_dir / "rules.yml"
        self.rules_path.write_text(rules)
        config = {
            "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{interval_s}s",
                       "evaluation_interval": f"{interval_s}s"},
            "rule_files": [str(self.rules_path)],
            "scrape_configs": [{"job_name": JOB, "metrics_path": "/metrics",
                                "static_configs": [{"targets": list(targets)}]}],
        }
        config_path = data_dir / "prometheus.yml"
        config_path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        assert PROMETHEUS is not None
        self.log_path = data_dir / "prometheus.log"
        self.process = ManagedProcess("prometheus", [
            PROMETHEUS, f"--config.file={config_path}", f"--storage.tsdb.path={data_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{self.port}"], log_path=self.log_path)

    def start(self) -> None:
        self.process.start()
        self.process.wait_ready(lambda: self.get("/-/ready")[0] == 200, timeout_s=READY_DEADLINE_S)

    def stop(self) -> None:
        self.process.stop(grace_s=10)

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def get(self, path: str, params: Mapping[str, str] | None = None) -> tuple[int, Any]:
        """(HTTP status, decoded JSON or text) of a GET; 4xx/5xx included."""
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def query(self, expr: str) -> tuple[int, Any]:
        """/api/v1/query: 200 with the result, or 400 with errorType bad_data when expr does not parse."""
        return self.get("/api/v1/query", {"query": expr})

    def values(self, expr: str) -> list[tuple[dict[str, str], float]]:
        status, body = self.query(expr)
        assert status == 200, f"{expr}: {body}"
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), each with labels, annotations, state and value."""
        status, body = self.get("/api/v1/alerts")
        assert status == 200, body
        return list(body["data"]["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its name, query (as Prometheus parsed it), duration and labels."""
        status, body = self.get("/api/v1/rules")
        assert status == 200, body
        return [rule for group in body["data"]["groups"] for rule in group["rules"]]


def with_thresholds(rules: str, thresholds: Mapping[str, str], durations: Mapping[str, str]) -> str:
    """The rules text with the `# threshold:` literal of each alert in `thresholds` and the `for:`
    of each alert in `durations` replaced, as the header of alerts.yml tells an operator to do.

    Works on the text, block by block (`- alert: NAME` to the next one), and insists on exactly
    one literal to replace in each block, so that nothing but these numbers can change.
    """
    blocks = re.split(r"(?m)^(?=\s*- alert: )", rules)
    seen = set()
    for index, block in enumerate(blocks):
        found = re.match(r"\s*- alert: (\w+)", block)
        if found is None:
            continue
        name = found.group(1)
        if name in thresholds:
            block, count = re.subn(r"> [0-9.e+]+ # threshold:", f"> {thresholds[name]} # threshold:", block)
            assert count == 1, f"{name}: {count} threshold literals"
        if name in durations:
            block, count = re.subn(r"(?m)^(\s+for: )\S+$", rf"\g<1>{durations[name]}", block)
            assert count == 1, f"{name}: {count} for: lines"
        blocks[index] = block
        seen.add(name)
    missing = (set(thresholds) | set(durations)) - seen
    assert not missing, f"no such alerts in the rules: {sorted(missing)}"
    return "".join(blocks)
