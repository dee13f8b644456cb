"""Alert rules end to end, with the worker as a real process on the embedded stack: a deterministic
event set made to fire and resolve every rule kind; the alerts topic, Redis and /v1/alerts must equal
a reference of the firings and resolutions computed here in plain Python (not with the pipeline's
engine), also after a SIGKILL in mid-stream, with no alert id twice.

Phases, as in groundtruth.py, so that what the rules judge does not depend on the worker's timing:
0. one event per input partition, and a wait for the frontier: the low watermark stage 2 first knows
   is then exact, and with it the first window the rules judge;
1. 26 minutes of events of a few types, in event-time order per partition (no event is late);
2. the sentinels, two hours ahead: every window of phase 1 closes, and a long quiet stretch follows.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

import groundtruth as gt
import orjson
import pytest
from alertref import Ev, active_of, frontier_of, recent_of, records, reference, rules_toml, web_active_of
from helpers import metric_samples, wait_for
from pipeline_harness import Names, Worker, create_topics, names_for, produce, read_topic, run, web_port, worker_env

from devstack.stack import Endpoints
from formats.alerts import alert_seq
from formats.partials import partial_partition

STEP_DEADLINE_S = 120.0
MINUTE = 60_000
BASE_MS = gt.BASE_MS
SENTINEL_MS = gt.SENTINEL_MS
HOSTILE = "a:b/../é<x>*"
ERRORS = [1, 2, 7, 8, 9, 1, 6, 6, 0, 0, 7, 7, 7, 1, 2, 3, 2, 1, 0, 0, 1, 1, 1, 8, 8, 8]
PURCHASES = [10, 9, 10, 4, 4, 8, 8, 0, 0, 0, 0, 5, 6, 6, 2, 6, 6, 6, 0, 6, 6, 6, 6, 6, 6, 6]
HEARTBEAT = [1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1]

# The rules, as data for the reference (alertref.py) and as the TOML the worker reads.
RULES: list[dict[str, Any]] = [
    {"name": "error_spike", "kind": "threshold", "window": "tumbling_1m", "event_types": ["error"],
     "measure": "count", "op": ">=", "threshold": 6, "for": 2, "severity": "critical", "labels": {"team": "web"}},
    {"name": "error_burst", "kind": "threshold", "window": "hopping_1m", "event_types": ["error"],
     "measure": "count", "op": ">=", "threshold": 8},
    {"name": "purchase_drop", "kind": "change", "window": "tumbling_1m", "event_types": ["purchase"],
     "measure": "count", "op": "<", "threshold": 0.5},
    {"name": "purchase_outlier", "kind": "anomaly", "window": "tumbling_1m", "event_types": ["purchase"],
     "measure": "max", "op": ">", "threshold": 2.5, "trailing": 4, "severity": "info"},
    {"name": "gone_silent", "kind": "absence", "window": "tumbling_1m", "event_types": ["heartbeat", "purchase"],
     "for": 3, "resolve_for": 2, "severity": "critical"},
    {"name": "big_value", "kind": "threshold", "window": "tumbling_1m", "measure": "max", "op": ">=",
     "threshold": 90},
]


# -- the event set -----------------------------------------------------------------------------


def warmup() -> list[Ev]:
    return [Ev(p, "tick", BASE_MS - 30_000, 0.25) for p in range(gt.PARTITIONS)]


def phase1(seed: int = 5) -> list[Ev]:
    rng = random.Random(seed)
    events = []
    for i, counts in enumerate(zip(ERRORS, PURCHASES, HEARTBEAT, strict=True)):
        start = BASE_MS + i * MINUTE
        for event_type, n in zip(("error", "purchase", "heartbeat"), counts, strict=True):
            for _ in range(n):
                value = 50.0 if (event_type, i) == ("purchase", 12) else rng.randrange(0, 8) / 4
                events.append(Ev(rng.randrange(gt.PARTITIONS), event_type, start + rng.randrange(MINUTE), value))
        if i in (5, 6):
            events.append(Ev(rng.randrange(gt.PARTITIONS), HOSTILE, start + 1_000, 95.0 if i == 5 else 1.0))
        for t in range(0, MINUTE, 10_000):  # ticks: every partition's watermark advances
            events += [Ev(p, "tick", start + t + p, 0.25) for p in range(gt.PARTITIONS)]
    return sorted(events, key=lambda e: (e.event_ms, e.partition))


# -- the scenario --------------------------------------------------------------------------------


def run_scenario(stack: Endpoints, names: Names, tmp_path: Path, *, crash: bool) -> None:
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(rules_toml(RULES))
    env = worker_env(stack, names, tmp_path / "state", web_port())
    env["ALERT_RULES"] = str(rules_path)
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        first = warmup()
        run(produce(stack, names.events, records(first)))
        first_low = frontier_of(first)
        wait_for(lambda: worker.status()["frontier_ms"] == first_low, timeout_s=STEP_DEADLINE_S,
                 what=f"the frontier to reach {first_low} after the warm-up", detail=worker.status)
        events = phase1()
        if crash:
            half = len(events) // 2
            offsets = run(produce(stack, names.events, records(events[:half])))
            last = {str(e.partition): o for e, o in zip(events[:half], offsets, strict=True)}
            wait_for(lambda: all(worker.status()["input_offsets"].get(p, -1) >= o for p, o in last.items()),
                     timeout_s=STEP_DEADLINE_S, what="the first half to be processed")
            worker.kill()
            run(produce(stack, names.events, records(events[half:])))
            worker.start()
        else:
            run(produce(stack, names.events, records(events)))
        wait_for(lambda: worker.status()["frontier_ms"] == frontier_of(first + events), timeout_s=STEP_DEADLINE_S,
                 what="the frontier after phase 1", detail=worker.status)
        run(produce(stack, names.events, gt.sentinels()))
        sentinel_low = SENTINEL_MS - gt.LATENESS_MS
        sentinels = [Ev(p, "sentinel", SENTINEL_MS, 0.0) for p in range(gt.PARTITIONS)]
        expected = reference(RULES, first + events + sentinels, first_low, sentinel_low)
        check_reference_covers_every_kind(expected)
        wait_for(lambda: len(run(read_topic(stack, names.alerts))) >= len(expected), timeout_s=STEP_DEADLINE_S,
                 what=f"{len(expected)} alerts in {names.alerts}",
                 detail=lambda: len(run(read_topic(stack, names.alerts))))
        check_topic(run(read_topic(stack, names.alerts)), expected)
        check_redis(stack, names, expected)
        check_web(worker, expected)
        if not crash:
            check_metrics(worker, expected)
    finally:
        status = worker.stop()
    assert status == 0, f"the worker did not stop cleanly (status {status}); see {worker.log_path}"


def check_reference_covers_every_kind(expected: list[dict[str, Any]]) -> None:
    seen = {(a["rule"], a["state"]) for a in expected}
    assert seen == {(r["name"], s) for r in RULES for s in ("firing", "resolved")}, seen
    assert any(a["event_type"] == HOSTILE for a in expected)


def check_topic(records_: list[Any], expected: list[dict[str, Any]]) -> None:
    got = [orjson.loads(r.value) for r in records_]
    ids = [a["id"] for a in got]
    assert len(ids) == len(set(ids)), "an alert id appears twice in the alerts topic"
    by_partition: dict[int, list[Any]] = defaultdict(list)
    for r in records_:
        by_partition[r.partition].append(r)
    for partition, part in by_partition.items():
        seqs = [alert_seq([(k, bytes(v)) for k, v in r.headers]) for r in part]
        assert seqs == list(range(len(part))), f"partition {partition}: sequence numbers {seqs}"
        assert all(bytes(r.key) == orjson.loads(r.value)["id"].encode() for r in part)
    for partition in range(gt.PARTITIONS):  # in each partition, the reference's order of its types
        want = [a for a in expected if partial_partition(a["event_type"], gt.PARTITIONS) == partition]
        assert [orjson.loads(r.value) for r in by_partition.get(partition, [])] == want


def check_redis(stack: Endpoints, names: Names, expected: list[dict[str, Any]]) -> None:
    import redis

    client = redis.Redis.from_url(stack.redis_url)
    try:
        active = {k.decode(): orjson.loads(v) for k, v in client.hgetall(f"{names.redis_prefix}alerts:active").items()}
        recent = [orjson.loads(m) for m in client.zrevrange(f"{names.redis_prefix}alerts:recent", 0, -1)]
    finally:
        client.close()
    assert active == active_of(expected)
    assert recent == recent_of(expected)


def check_web(worker: Worker, expected: list[dict[str, Any]]) -> None:
    status, body = worker.get("/v1/alerts?limit=1000")
    assert status == 200, body
    want_active = web_active_of(expected)
    assert body["active"] == want_active and want_active
    assert body["recent"] == recent_of(expected)
    assert body["rules"] == [r["name"] for r in RULES]
    for rule in RULES:
        for state in ("firing", "resolved"):
            status, body = worker.get(f"/v1/alerts?rule={rule['name']}&state={state}&limit=1000")
            assert status == 200, body
            assert body["recent"] == [a for a in recent_of(expected) if (a["rule"], a["state"]) == (rule["name"],
                                                                                                   state)]
            assert all(a["rule"] == rule["name"] for a in body["active"])
            if state == "resolved":
                assert body["active"] == []
    for path, code in (("/v1/alerts?state=open", 400), ("/v1/alerts?rule=nope", 404),
                       ("/v1/alerts?limit=0", 400), (f"/v1/alerts?rule={quote('a b')}", 404)):
        status, body = worker.get(path)
        assert (status, body["error"]["status"]) == (code, code), (path, body)


def check_metrics(worker: Worker, expected: list[dict[str, Any]]) -> None:
    samples = metric_samples(worker.metrics())
    for rule in RULES:
        for state in ("firing", "resolved"):
            labels = (("rule", rule["name"]), ("severity", rule.get("severity", "warning")), ("state", state))
            want = sum(1 for a in expected if (a["rule"], a["state"]) == (rule["name"], state))
            assert samples[("pipeline_alerts_total", labels)] == want
    active = {(k[1][1][1], k[1][0][1]) for k, v in samples.items() if k[0] == "pipeline_alert_active" and v == 1}
    assert active == {(a["rule"], a["event_type"]) for a in active_of(expected).values()}


@pytest.mark.timeout(600)
def test_alerts_equal_the_reference(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    run_scenario(stack, names_for(unique_name), tmp_path, crash=False)


@pytest.mark.timeout(600)
def test_alerts_equal_the_reference_after_sigkill(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    run_scenario(stack, names_for(unique_name), tmp_path, crash=True)
