"""`faust -A app produce` as a user runs it: the topic holds exactly the records the command
reports, with exactly the malformed and late shares it was asked for."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from groundtruth import PARTITIONS
from helpers import wait_for
from pipeline_harness import read_topic, run

from agents.ingest import MIN_EVENT_MS
from aggregations.judge import Counted, judge
from commands.loadgen import MALFORMED_KINDS, late_offset_ms
from devstack.stack import Endpoints, without_service_urls
from formats.events import Event, Rejection, decode_event
from settings import load

ROOT = Path(__file__).resolve().parents[2]
# Start-up plus 20,000 events: a few seconds on the embedded broker, on a busy 2-core machine too.
PRODUCE_DEADLINE_S = 120.0
# The broker may answer a first read before the last batches are visible.
READ_DEADLINE_S = 30.0


def _produce(stack: Endpoints, topic: str, tmp_path: Path, *args: str,
             extra_env: dict[str, str] | None = None) -> tuple[list[str], int, int]:
    """Run the command; its stdout lines and the wall-clock ms before and after it."""
    env = {**without_service_urls(os.environ), **stack.env(), "PYTHONPATH": str(ROOT), "TOPIC_EVENTS": topic,
           "TOPIC_PARTITIONS": str(PARTITIONS), "STATE_DIR": str(tmp_path / "state"), **(extra_env or {})}
    before_ms = time.time_ns() // 1_000_000
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "produce", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=PRODUCE_DEADLINE_S)
    after_ms = time.time_ns() // 1_000_000
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), before_ms, after_ms


def _read_exactly(stack: Endpoints, topic: str, count: int) -> list[Any]:
    seen: list[Any] = []

    def complete() -> bool:
        seen[:] = run(read_topic(stack, topic))
        return len(seen) == count

    wait_for(complete, timeout_s=READ_DEADLINE_S, what=f"{count} records in {topic}", detail=lambda: len(seen))
    return seen


def test_full_speed_preload_has_exact_counts(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    count, fraction = 20_000, Fraction("0.01")
    lines, before_ms, after_ms = _produce(stack, unique_name, tmp_path, "--rate", "0", "--count", str(count),
                                          "--malformed", "0.01", "--late", "0.01", "--seed", "3")
    assert lines[-1].startswith(f"produced {count} events (200 malformed, 200 late) in ")

    records = _read_exactly(stack, unique_name, count)
    pipeline = load({}).pipeline
    decoded = [decode_event(r.value, max_bytes=pipeline.max_event_bytes, min_event_ms=MIN_EVENT_MS,
                            max_event_ms=after_ms + pipeline.max_clock_skew_ms) for r in records]
    reasons = Counter(d.reason for d in decoded if isinstance(d, Rejection))
    # 200 malformed records cycle through the kinds: 28 full cycles of 7, then the first 4 once more.
    cycle = MALFORMED_KINDS * (int(count * fraction) // len(MALFORMED_KINDS) + 1)
    assert reasons == Counter(kind.reason for kind in cycle[: int(count * fraction)])

    events = [(r, d) for r, d in zip(records, decoded, strict=True) if isinstance(d, Event)]
    assert all(r.key == d.user_id.encode() for r, d in events)
    offset_ms = late_offset_ms(pipeline.allowed_lateness_ms, pipeline.windows)
    late = [d for _, d in events if d.event_ms < before_ms]
    assert len(late) == 200
    assert all(before_ms - offset_ms <= d.event_ms <= after_ms - offset_ms for d in late)
    assert all(before_ms <= d.event_ms <= after_ms for _, d in events if d.event_ms >= before_ms)


def test_rate_and_duration_give_rate_times_duration(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    lines, _, _ = _produce(stack, unique_name, tmp_path, "--rate", "1000", "--duration", "2")
    assert lines[-1].startswith("produced 2000 events (0 malformed, 0 late) in ")
    assert len(_read_exactly(stack, unique_name, 2_000)) == 2_000


def test_with_a_spec_it_produces_the_specs_events(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    """AGGREGATIONS=deploy/aggregations/iot.toml: readings of --users devices per aggregation, with the
    malformed and late shares asked for, as the spec's judge takes them."""
    spec_path = ROOT / "deploy" / "aggregations" / "iot.toml"
    count = 2_000
    lines, before_ms, after_ms = _produce(stack, unique_name, tmp_path, "--rate", "0", "--count", str(count),
                                          "--malformed", "0.01", "--late", "0.01", "--users", "50", "--seed", "5",
                                          extra_env={"AGGREGATIONS": str(spec_path)})
    assert lines[-1].startswith(f"produced {count} events (20 malformed, 20 late) in ")
    records = _read_exactly(stack, unique_name, count)
    settings = load({"AGGREGATIONS": str(spec_path)})
    spec, pipeline = settings.pipeline.spec, settings.pipeline
    assert spec is not None
    judged = [judge(r.value, spec, max_bytes=pipeline.max_event_bytes, min_event_ms=MIN_EVENT_MS,
                    max_event_ms=after_ms + pipeline.max_clock_skew_ms) for r in records]
    assert Counter(j.reason for j in judged if isinstance(j, Rejection)) == {"invalid_json": 10, "missing_field": 10}
    good = [j for j in judged if not isinstance(j, Rejection)]
    assert all(isinstance(result, Counted) for j in good for result in j.results)  # every aggregation counts it
    assert len({j.results[0].key for j in good}) == 50  # type: ignore[union-attr]
    assert sum(1 for j in good if j.event_ms < before_ms) == 20
    with pytest.raises(subprocess.CalledProcessError) as caught:
        subprocess.run([sys.executable, "-m", "faust", "-A", "app", "produce", "--types", "a,b", "--count", "1"],
                       cwd=ROOT, env={**without_service_urls(os.environ), **stack.env(), "PYTHONPATH": str(ROOT),
                                      "AGGREGATIONS": str(spec_path), "STATE_DIR": str(tmp_path / "state2")},
                       capture_output=True, text=True, timeout=PRODUCE_DEADLINE_S, check=True)
    assert "--types makes the article's events" in caught.value.stderr
