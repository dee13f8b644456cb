"""The shipped operator alerts on a real Prometheus (Debian's) scraping a real worker.

The rules are deploy/prometheus/alerts.yml with only numbers changed, the way its header
tells an operator to change them (`with_thresholds`): the input lag threshold lowered from
1,000,000 to LAG_THRESHOLD records, and the `for:` of the two alerts under test shortened so
that the test takes seconds, not minutes. Every expression is the shipped one.

The worker reports its own lag (monitor.py: high watermark of its last fetch minus its
position, sampled every 5 s), so a stopped worker reports none: while it is stopped, the
worker-down alert fires. Input keeps arriving meanwhile (BURST records); once it is started
again it is that far behind, which fires the lag alert, and the alert resolves when it has
caught up. Then a SIGKILL fires the worker-down alert again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import groundtruth as gt
import pytest
from aiokafka import AIOKafkaProducer
from helpers import wait_for
from pipeline_harness import Worker, create_topics, names_for, run, web_port, worker_env
from prometheus_server import RULES, PrometheusServer, requires_prometheus, with_thresholds

from devstack.stack import Endpoints

LAG_THRESHOLD = 5_000  # records per input partition; shipped: 1,000,000
# The rules under test, with their shipped `for:` (1m, 2m) shortened. Prometheus scrapes and
# evaluates every second, so 2 s is two failed scrapes, and 1 s two evaluations in a row.
TEST_RULES = with_thresholds(RULES.read_text(), thresholds={"PipelineInputLagHigh": str(LAG_THRESHOLD)},
                             durations={"PipelineWorkerDown": "2s", "PipelineInputLagHigh": "1s"})
WARMUP = 400  # records before the stop: the worker keeps up with these
# The article's million (250,000 per input partition). A worker drains 50,000-80,000 records/s
# here and samples its lag every 5 s: a backlog of 150,000 was gone before any sample saw it,
# a million spans about three samples. Sent in whole record batches, it takes ~4 s.
BURST = 1_000_000
# Deadlines. A worker's first group join takes ~15 s on this stack, a rejoin less; the drain of
# BURST takes ~15 s (longer on a loaded 2-core machine). Prometheus sees a change within a
# scrape plus an evaluation (2 s) and the `for:` above.
READY_DEADLINE_S = 90.0
ALERT_DEADLINE_S = 30.0
CATCH_UP_DEADLINE_S = 90.0
INPUT_LAG = 'pipeline_consumer_lag{topic!~".+-window-partials"}'  # the lag alert's selector
UNDER_TEST = ("PipelineWorkerDown", "PipelineInputLagHigh")


async def _send(stack: Endpoints, topic: str, start: int, count: int, base_ms: int) -> None:
    """Valid events `start` to `start + count` over every partition, 1 ms of event time apart,
    appended to record batches and sent a batch at a time (several times faster than a send
    per record, and faster than a worker consumes)."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.broker_url.removeprefix("kafka://"),
                                max_batch_size=1_000_000)
    await producer.start()
    try:
        sent = []
        for partition in range(gt.PARTITIONS):
            batch = producer.create_batch()
            for i in range(start + partition, start + count, gt.PARTITIONS):
                value = gt.encode("u1", "click", base_ms + i, 1.0)
                if batch.append(key=b"u1", value=value, timestamp=None) is None:  # full
                    sent.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                    batch.append(key=b"u1", value=value, timestamp=None)
            sent.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def _active(prometheus: PrometheusServer, alertname: str, state: str = "firing") -> list[dict[str, Any]]:
    return [alert for alert in prometheus.alerts()
            if alert["labels"]["alertname"] == alertname and alert["state"] == state]


def _total(prometheus: PrometheusServer, expr: str) -> float | None:
    values = prometheus.values(expr)
    return values[0][1] if values else None


def test_test_rules_change_only_the_numbers() -> None:
    shipped, changed = RULES.read_text().splitlines(), TEST_RULES.splitlines()
    assert len(shipped) == len(changed)
    diff = [(a.strip(), b.strip()) for a, b in zip(shipped, changed, strict=True) if a != b]
    assert diff == [("for: 1m", "for: 2s"),
                    ('expr: pipeline_consumer_lag{topic!~".+-window-partials"} > 1000000 # threshold: records behind '
                     "(the article's 1 million)",
                     f'expr: pipeline_consumer_lag{{topic!~".+-window-partials"}} > {LAG_THRESHOLD} # threshold: '
                     "records behind (the article's 1 million)"),
                    ("for: 2m", "for: 1s")]


@requires_prometheus
@pytest.mark.timeout(240)
def test_lag_and_worker_down_alerts_fire_and_resolve(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    started = time.monotonic()
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    port = web_port()
    worker = Worker(worker_env(stack, names, tmp_path / "state", port), tmp_path / "worker.log")
    base_ms = int(time.time() * 1000) - 1_200_000  # event time in the recent past: windows close as it advances
    prometheus = PrometheusServer(tmp_path / "prometheus", rules=TEST_RULES, targets=[f"127.0.0.1:{port}"])
    worker.start()
    prometheus.start()
    try:
        assert {rule["name"]: rule["duration"] for rule in prometheus.rules()
                if rule["name"] in UNDER_TEST} == \
            {"PipelineWorkerDown": 2, "PipelineInputLagHigh": 1}

        # Keeping up: a ready worker, its lag reported on every input partition, no alert.
        run(_send(stack, names.events, 0, WARMUP, base_ms))
        wait_for(lambda: _total(prometheus, "sum(pipeline_ready)") == 1 and
                 _total(prometheus, "sum(pipeline_events_consumed_total)") == WARMUP and
                 _total(prometheus, f"count({INPUT_LAG})") == gt.PARTITIONS,
                 timeout_s=READY_DEADLINE_S, what="Prometheus to scrape a ready worker that consumed the warm-up",
                 detail=lambda: prometheus.values('{__name__=~"up|pipeline_ready|pipeline_events_consumed_total"}'))
        assert _total(prometheus, f"max({INPUT_LAG})") == 0
        assert not [a for a in prometheus.alerts() if a["labels"]["alertname"] in UNDER_TEST]

        # Stopped (SIGTERM) while input arrives: the worker-down alert fires.
        assert worker.stop() == 0
        down = wait_for(lambda: _active(prometheus, "PipelineWorkerDown"), timeout_s=ALERT_DEADLINE_S,
                        what="PipelineWorkerDown to fire after SIGTERM", detail=prometheus.alerts)
        assert down[0]["labels"] == {"alertname": "PipelineWorkerDown", "severity": "critical", "job": "pipeline",
                                     "instance": f"127.0.0.1:{port}"}
        assert down[0]["annotations"]["summary"] == f"Pipeline worker 127.0.0.1:{port} is down"
        run(_send(stack, names.events, WARMUP, BURST, base_ms))

        # Started again, it is BURST records behind: the lag alert fires (one per input partition
        # behind), then resolves once it has caught up; the worker-down alert has resolved.
        worker.start()
        lagging = wait_for(lambda: _active(prometheus, "PipelineInputLagHigh"), timeout_s=READY_DEADLINE_S,
                           what="PipelineInputLagHigh to fire while the restarted worker works off the burst",
                           detail=lambda: (prometheus.values(INPUT_LAG), prometheus.alerts()))
        fired_at = time.monotonic()
        for alert in lagging:
            labels = alert["labels"]
            assert (labels["alertname"], labels["severity"], labels["topic"]) == \
                ("PipelineInputLagHigh", "warning", names.events)
            # At most its share of the burst, plus warm-up records it reads again (it resumes
            # where its raw archive does).
            assert LAG_THRESHOLD < float(alert["value"]) <= (BURST + WARMUP) / gt.PARTITIONS
        assert not _active(prometheus, "PipelineWorkerDown", "firing")
        wait_for(lambda: not [a for a in prometheus.alerts() if a["labels"]["alertname"] == "PipelineInputLagHigh"]
                 and _total(prometheus, f"max({INPUT_LAG})") == 0, timeout_s=CATCH_UP_DEADLINE_S,
                 what="PipelineInputLagHigh to resolve once the worker has caught up",
                 detail=lambda: (prometheus.values(INPUT_LAG), prometheus.alerts()))
        print(f"lag alert fired {fired_at - started:.0f} s in, resolved {time.monotonic() - fired_at:.0f} s later")
        assert _total(prometheus, "sum(pipeline_events_consumed_total)") >= BURST  # counted since the restart

        # SIGKILLed: down again.
        worker.kill()
        wait_for(lambda: _active(prometheus, "PipelineWorkerDown"), timeout_s=ALERT_DEADLINE_S,
                 what="PipelineWorkerDown to fire after SIGKILL", detail=prometheus.alerts)
    finally:
        worker.stop()
        prometheus.stop()
    print(f"operator alerts test took {time.monotonic() - started:.0f} s")
