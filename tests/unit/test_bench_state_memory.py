"""bench.state_memory measures the open state per window key; the sparse stage-2 layout holds."""

from __future__ import annotations

from bench.state_memory import measure_apart


def test_a_keyed_inputs_state_barely_grows_with_the_input_partitions() -> None:
    # Stage 2 keeps a row of a key only for the partitions that sent it, and 4 bytes for each other one
    # (tables.totals.SourceColumns); dense columns cost 72 bytes per key and partition with 2 measures.
    four, twelve = measure_apart(5_000, 2, 4, True), measure_apart(5_000, 2, 12, True)
    assert 136 < four < twelve <= four + 8 * 4 + 16  # the two stages' 136 bytes of partials at least
    keyless = measure_apart(5_000, 2, 4, False)
    assert keyless >= four + 3 * 72  # every partition sent every key: a row each
