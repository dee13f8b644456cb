"""The chaos suite's short, fixed-seed run for `make test`: CHAOS_TEST_ITERATIONS iterations
(3), each with at least five SIGKILLs and a random mix of the other faults (tests/chaos/plan.py),
and exact ground truth after each. `make chaos ITERATIONS=N SEED=S` runs the long version."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from runner import run_chaos

SEED = 20261201
ITERATIONS = 3


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_randomized_faults_leave_every_output_exact(tmp_path: Path) -> None:
    out = io.StringIO()
    failed = run_chaos(ITERATIONS, SEED, tmp_path / "chaos", out=out)
    print(out.getvalue())
    assert failed == 0, out.getvalue()
