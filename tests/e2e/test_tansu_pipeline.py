"""The pipeline on Tansu (DEVSTACK_BROKER=tansu, docs/development.md, Brokers): the ground truth after a SIGKILL and a
restart, and a spec end to end, on an embedded stack of its own. The rest of the suite runs on Apache
Kafka."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import specref
from pipeline_harness import ROOT, names_for, web_port, worker_env
from test_pipeline import test_ground_truth_after_sigkill as _ground_truth_after_sigkill
from test_spec_pipeline import test_a_spec_end_to_end_equals_the_reference as _spec_end_to_end

from devstack.stack import Endpoints


def test_ground_truth_after_sigkill_on_tansu(tansu_stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _ground_truth_after_sigkill(tansu_stack, unique_name, tmp_path)


def test_the_iot_spec_end_to_end_on_tansu(tansu_stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _spec_end_to_end(specref, tansu_stack, unique_name, tmp_path)


@pytest.mark.parametrize("command", [("worker",), ("produce", "--count", "10")])
@pytest.mark.parametrize("transactions", ["true", "false"])
def test_the_defaults_on_a_broker_without_idempotence_stop_in_one_line(
        tansu_stack: Endpoints, unique_name: str, tmp_path: Path, transactions: str, command: tuple[str, ...]) -> None:
    """KAFKA_IDEMPOTENCE=true (the default, and KAFKA_TRANSACTIONS needs it) against Tansu, which has neither:
    one line naming the setting to change, status 2, not a traceback, a restart loop or a hang."""
    names = names_for(unique_name)
    env = {**worker_env(tansu_stack, names, tmp_path / "state", web_port()), "KAFKA_TRANSACTIONS": transactions,
           "KAFKA_IDEMPOTENCE": "true"}
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "app", *command], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    line, = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: KAFKA_IDEMPOTENCE: the broker refused an idempotent producer"), line
    assert "Traceback" not in done.stderr
