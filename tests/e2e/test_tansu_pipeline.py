"""The pipeline on Tansu (DEVSTACK_BROKER=tansu, README Brokers): the ground truth after a SIGKILL and a
restart, and a spec end to end, on an embedded stack of its own. The rest of the suite runs on Apache
Kafka."""

from __future__ import annotations

from pathlib import Path

import specref
from test_pipeline import test_ground_truth_after_sigkill as _ground_truth_after_sigkill
from test_spec_pipeline import test_a_spec_end_to_end_equals_the_reference as _spec_end_to_end

from devstack.stack import Endpoints


def test_ground_truth_after_sigkill_on_tansu(tansu_stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _ground_truth_after_sigkill(tansu_stack, unique_name, tmp_path)


def test_the_iot_spec_end_to_end_on_tansu(tansu_stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    _spec_end_to_end(specref, tansu_stack, unique_name, tmp_path)
