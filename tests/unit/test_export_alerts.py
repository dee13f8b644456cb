"""Stage 2's alert rules in-process (agents/export.py with the fakes): over partials and frontiers of
two input partitions, the alerts in the alerts topic are exactly what the engine makes of every closed
window in order (with no row or with rows, across a long quiet stretch that the cursor jumps), Redis
holds the active ones and the history, and a crash at any changelog write, alert send or export
leaves the same alerts, in the same order, none twice."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agents.export import ExportContext, ExportPartition, plan_steps
from alerts.engine import evaluate_window, track_key
from alerts.rules import parse_rules
from formats.alerts import Alert, Track, alert_seq, decode_alert, encode_alert
from formats.partials import FrontierMessage, PartialKey, encode_frontier, partial_partition
from formats.rows import WindowRow
from kafka_io.topics import topics_for
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import load
from tables.state import decode_export_state
from tables.windows import first_open_start
from testing.fakes import CrashError, FakeBroker, FakeClock, FakeOutputs, FakeStore, partials_messages

RULES_TEXT = """
[[rule]]
name = "error_spike"
kind = "threshold"
window = "tumbling_1m"
event_types = ["errors"]
measure = "count"
op = ">="
threshold = 6
for = 2

[[rule]]
name = "drop"
kind = "change"
window = "tumbling_1m"
event_types = ["purchase"]
measure = "count"
op = "<"
threshold = 0.5

[[rule]]
name = "odd_value"
kind = "anomaly"
window = "tumbling_1m"
measure = "max"
op = ">"
threshold = 2.5
trailing = 4

[[rule]]
name = "silent"
kind = "absence"
window = "tumbling_1m"
event_types = ["pulse", "purchase"]
for = 3
resolve_for = 2
severity = "critical"
labels = { team = "x" }
"""
BASE_SETTINGS = load({"TOPIC_PARTITIONS": "2", "WINDOWS": "tumbling_1m:60s"})
WINDOWS = BASE_SETTINGS.pipeline.windows
SETTINGS = load({"TOPIC_PARTITIONS": "2", "WINDOWS": "tumbling_1m:60s"})
object.__setattr__(SETTINGS, "pipeline", SETTINGS.pipeline.__class__(
    **{**{f: getattr(SETTINGS.pipeline, f) for f in SETTINGS.pipeline.__slots__},
       "alert_rules": parse_rules(RULES_TEXT, WINDOWS)}))
RULES = SETTINGS.pipeline.alert_rules
TOPICS = topics_for(SETTINGS)
Q = 0
BASE_MS = 1_793_574_000_000
SIZE_MS = 60_000
SENTINEL_MS = BASE_MS + 10 * 3_600_000
# Per window index: events of each type (error counts for the threshold, purchase counts for the
# change and the absence, heartbeat for the absence, and a value spike for the anomaly).
ERRORS = [1, 2, 7, 8, 9, 1, 6, 6, 0, 0, 7, 7, 7, 1, 2, 3, 2, 1, 0, 0, 1, 1, 1, 8, 8, 8]
PURCHASES = [10, 9, 10, 4, 4, 8, 8, 0, 0, 0, 0, 5, 6, 6, 2, 6, 6, 6, 0, 6, 6, 6, 6, 6, 6, 6]
HEARTBEAT = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1]


@dataclass
class Input:
    messages: list[bytes]
    rows: dict[int, dict[str, WindowRow]]  # window start -> type -> final row
    first_low: int  # the low frontier when both input partitions have first reported


def _input(seed: int) -> Input:
    rng = random.Random(seed)
    events: list[tuple[int, str, float]] = []
    for i, (errors, purchases, beats) in enumerate(zip(ERRORS, PURCHASES, HEARTBEAT, strict=True)):
        start = BASE_MS + i * SIZE_MS
        for event_type, n in (("errors", errors), ("purchase", purchases), ("pulse", beats)):
            for _ in range(n):
                value = 50.0 if (event_type, i) == ("purchase", 12) else rng.randrange(0, 8) / 4
                events.append((start + rng.randrange(SIZE_MS), event_type, value))
    events.sort()
    now = {0: BASE_MS, 1: BASE_MS}
    partials: dict[int, dict[PartialKey, list[float]]] = {0: {}, 1: {}}
    frontiers: dict[int, int] = {}
    messages = []
    first_low = None
    for offset, (event_ms, event_type, value) in enumerate(events):
        p = rng.choice((0, 1))
        now[p] = event_ms
        key = PartialKey("tumbling_1m", event_ms - event_ms % SIZE_MS, event_type)
        partial = partials[p].setdefault(key, [0, 0.0, value, value, 0])
        partial[0] += 1
        partial[1] += value
        partial[2], partial[3], partial[4] = min(partial[2], value), max(partial[3], value), offset
        messages += partials_messages(p, [(key, list(partial))])
        low = min(now.values()) - 20_000
        if rng.random() < 0.2 and low > frontiers.get(p, low - 1):
            frontiers[p] = low
            messages.append(encode_frontier(FrontierMessage(p, low, 2, BASE_MS)))
            if first_low is None and len(frontiers) == 2:
                first_low = min(frontiers.values())
    for p in (0, 1):  # every window closes, after a long quiet stretch
        messages.append(encode_frontier(FrontierMessage(p, SENTINEL_MS, 2, BASE_MS)))
    rows: dict[int, dict[str, WindowRow]] = {}
    totals: dict[tuple[int, str], list[float]] = {}
    for event_ms, event_type, value in events:
        cur = totals.setdefault((event_ms - event_ms % SIZE_MS, event_type), [0, 0.0, value, value])
        cur[0] += 1
        cur[1] += value
        cur[2], cur[3] = min(cur[2], value), max(cur[3], value)
    for (start, event_type), (count, total, low_v, high) in totals.items():
        rows.setdefault(start, {})[event_type] = WindowRow("tumbling_1m", start, start + SIZE_MS, event_type,
                                                           int(count), total, low_v, high)
    assert first_low is not None
    return Input(messages, rows, first_low)


def _reference(data: Input) -> list[Alert]:
    """Every closed window judged in order, from the first window open when the low frontier was known."""
    tracks: dict[str, Track] = {}
    alerts = []
    start = first_open_start(WINDOWS[0], data.first_low)
    while start + SIZE_MS <= SENTINEL_MS:
        made, _ = evaluate_window(RULES, tracks, "tumbling_1m", start, start + SIZE_MS, data.rows.get(start, {}))
        alerts += made
        start += SIZE_MS
    return alerts


@dataclass
class Run:
    broker: FakeBroker
    outputs: FakeOutputs
    crashes: int = 0
    metrics: list[PipelineMetrics] = field(default_factory=list)


def _open(run: Run, clock: FakeClock) -> ExportPartition:
    metrics = PipelineMetrics()
    run.metrics.append(metrics)
    ctx = ExportContext(SETTINGS, TOPICS, run.broker, run.outputs, PipelineStats(), metrics,  # type: ignore[arg-type]
                        Path("/nonexistent"), clock)
    store = FakeStore(run.broker, TOPICS.export_state, Q)
    sent = [alert_seq(r.headers) for r in run.broker.log(TOPICS.alerts, Q)]
    return ExportPartition(ctx, Q, store, decode_export_state(store.restore()),  # type: ignore[arg-type]
                           sent[-1] if sent else -1)  # type: ignore[arg-type]


async def _drive(run: Run, messages: list[bytes], seed: int) -> ExportPartition:
    rng = random.Random(seed)
    clock = FakeClock()
    records = [SimpleNamespace(offset=i, value=m) for i, m in enumerate(messages)]
    part = _open(run, clock)
    while True:
        try:
            index = part.start_offset() or 0
            while True:
                await part.tick(clock())
                while not part.accepting():
                    await asyncio.sleep(0)
                    await part.tick(clock())
                if index >= len(records):
                    break
                batch = records[index:index + rng.randint(1, 12)]
                await part.process(batch)
                index += len(batch)
                clock.now_ms += 500
            return part
        except CrashError:
            run.crashes += 1
            await part.close(graceful=False)
            run.broker.fail_at = run.outputs.fail_at = None
            part = _open(run, clock)


def _topic(run: Run) -> list[tuple[int | None, Alert]]:
    return [(alert_seq(r.headers), decode_alert(r.value)) for r in run.broker.log(TOPICS.alerts, Q)
            if r.value is not None]


# Every type the rules list is routed to partition Q, as stage 1 would route it.
assert {partial_partition(t, 2) for t in ("errors", "purchase", "pulse")} == {Q}
DATA = _input(5)
REFERENCE = _reference(DATA)
CLEAN = Run(FakeBroker(), FakeOutputs())
CLEAN_PART = asyncio.run(_drive(CLEAN, DATA.messages, seed=1))


def test_every_rule_kind_fires_and_resolves_in_the_reference() -> None:
    seen = {(a.rule, a.state) for a in REFERENCE}
    assert seen == {(r.name, s) for r in RULES for s in ("firing", "resolved")}


def test_the_alerts_topic_holds_exactly_the_reference_in_order() -> None:
    got = _topic(CLEAN)
    assert [seq for seq, _ in got] == list(range(len(REFERENCE)))
    assert [a for _, a in got] == REFERENCE
    assert len({a.id for a in REFERENCE}) == len(REFERENCE)


def test_redis_holds_the_active_alerts_and_the_history() -> None:
    active: dict[str, Alert] = {}
    for alert in REFERENCE:
        key = track_key(alert.rule, alert.event_type)
        if alert.state == "firing":
            active[key] = alert
        else:
            active.pop(key, None)
    assert CLEAN.outputs.alerts_active == {k: encode_alert(a) for k, a in active.items()}
    assert CLEAN.outputs.alerts_recent == {encode_alert(a): a.window_end_ms for a in REFERENCE}
    firing = sorted(tuple(k.split(":")) for k in active)
    assert sorted(CLEAN_PART.state.tracks[k].firing for k in active) == [True] * len(firing)


def test_the_metrics_count_the_alerts_sent() -> None:
    metrics = CLEAN.metrics[-1]
    for rule in RULES:
        for state in ("firing", "resolved"):
            want = sum(1 for a in REFERENCE if (a.rule, a.state) == (rule.name, state))
            assert metrics.alerts.labels(rule.name, rule.severity, state)._value.get() == want


def test_the_quiet_stretch_is_jumped_not_walked() -> None:
    """Ten hours of windows without rows: judged only until no rule state can change, then skipped
    (the stored cursor stays at the last window judged, and no job has anything left to do)."""
    part = CLEAN_PART
    next_start, run = part.state.cursors["tumbling_1m"]
    assert run == part.quiet["tumbling_1m"]
    assert next_start < BASE_MS + (len(ERRORS) + run + 1) * SIZE_MS
    assert plan_steps({}, part.state.cursors, part.specs, part.quiet, SENTINEL_MS) == []


def _check_same_as_clean(run: Run) -> None:
    got = _topic(run)
    ids = [a.id for _, a in got]
    assert len(ids) == len(set(ids)), "an alert was sent twice"
    assert got == _topic(CLEAN)
    assert run.outputs.alerts_active == CLEAN.outputs.alerts_active
    assert run.outputs.alerts_recent == CLEAN.outputs.alerts_recent
    assert run.outputs.lake.aggregates == CLEAN.outputs.lake.aggregates


SENDS = CLEAN.broker.sends


@pytest.mark.parametrize("crash_at", range(1, SENDS + 1, max(1, SENDS // 300)))
def test_a_crash_at_any_send_leaves_the_same_alerts(crash_at: int) -> None:
    run = Run(FakeBroker(fail_at=crash_at), FakeOutputs())
    asyncio.run(_drive(run, DATA.messages, seed=1))
    assert run.crashes == 1
    _check_same_as_clean(run)


@pytest.mark.parametrize("crash_at", range(1, CLEAN.outputs.exports + 1))
def test_a_crash_at_any_export_leaves_the_same_alerts(crash_at: int) -> None:
    run = Run(FakeBroker(), FakeOutputs(fail_at=crash_at))
    asyncio.run(_drive(run, DATA.messages, seed=crash_at))
    assert run.crashes == 1
    _check_same_as_clean(run)


def test_repeated_crashes_leave_the_same_alerts() -> None:
    rng = random.Random(9)
    run = Run(FakeBroker(), FakeOutputs())

    async def drive() -> None:
        fail: Any = rng.randrange(1, SENDS)
        run.broker.fail_at = fail
        await _drive(run, DATA.messages, seed=3)

    for _ in range(5):
        asyncio.run(drive())
    _check_same_as_clean(run)
