"""A zombie: a worker paused (SIGSTOP) past the session timeout while it works, replaced by the other
worker, and resumed (SIGCONT) while events still arrive. Its partitions' next owner started their writers
(kafka_io.clients.TransactionalWriter) before restoring them, so whatever the paused worker sends after
it resumes is fenced: it stops (or rejoins the group and takes its share again), and every output equals
the ground truth, nothing doubled, lost or interleaved. Apache Kafka only: Tansu has no transactions,
and docs/architecture.md says what that leaves open there."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import groundtruth as gt
import pytest
from helpers import wait_for
from pipeline_harness import (
    Worker,
    create_topics,
    names_for,
    produce,
    run,
    web_port,
    worker_env,
)
from test_takeover import assert_every_output_exact

from agents.runner import FENCED
from devstack.stack import Endpoints

PER_PARTITION = 1_500
CHUNK = 30  # records per send of the steady producer
CHUNK_EVERY_S = 0.1  # 4 x 1,500 records in about 20 s: the stream runs before, during and after the pause
STEP_DEADLINE_S = 180.0
PAUSE_PAST_TAKEOVER_S = 2.0


class _SteadyProducer(threading.Thread):
    """Sends the records in order, CHUNK at a time, so that the paused worker is in mid-work when paused
    and has records to fetch when resumed."""

    def __init__(self, stack: Endpoints, topic: str, records: list[gt.Produced]) -> None:
        super().__init__(daemon=True)
        self.stack, self.topic, self.records = stack, topic, records
        self.offsets: list[int] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for first in range(0, len(self.records), CHUNK):
                self.offsets += run(produce(self.stack, self.topic, self.records[first:first + CHUNK]))
                time.sleep(CHUNK_EVERY_S)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_a_paused_worker_that_resumes_after_its_successor_took_over_is_fenced(
        stack: Endpoints, unique_name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if stack.broker != "kafka":
        pytest.skip("Tansu has no transactions: no fencing (docs/architecture.md, Exactly once)")
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    workers = [Worker(worker_env(stack, names, tmp_path / f"state{i}", web_port()), tmp_path / f"worker{i}.log")
               for i in range(2)]
    on_time, reasons = gt.phase1(PER_PARTITION, seed=11)
    try:
        for worker in workers:
            worker.start()
        wait_for(lambda: all(w.status()["assigned"]["events"] for w in workers)
                 and all(w.get("/v1/health/ready")[0] == 200 for w in workers), timeout_s=STEP_DEADLINE_S,
                 what="both workers to share the partitions", detail=lambda: [w.status()["assigned"] for w in workers])
        victim = next(w for w in workers if 0 in w.status()["assigned"]["events"])
        survivor = next(w for w in workers if w is not victim)
        assert victim.process is not None
        producer = _SteadyProducer(stack, names.events, on_time)
        producer.start()
        wait_for(lambda: victim.status()["input_offsets"].get("0", -1) >= PER_PARTITION // 4,
                 timeout_s=STEP_DEADLINE_S, what="the victim to be in mid-stream")
        victim.process.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        everything = list(range(gt.PARTITIONS))
        wait_for(lambda: survivor.status()["assigned"] == {"events": everything, "partials": everything}
                 and survivor.get("/v1/health/ready")[0] == 200, timeout_s=STEP_DEADLINE_S,
                 what="the survivor to own every partition", detail=survivor.status)
        time.sleep(PAUSE_PAST_TAKEOVER_S)  # the survivor writes meanwhile: the stream goes on
        paused_s = time.monotonic() - paused_at
        victim.process.send_signal(signal.SIGCONT)
        producer.join(timeout=STEP_DEADLINE_S)
        assert not producer.is_alive() and producer.error is None, producer.error
        assert_every_output_exact(stack, names, on_time, producer.offsets, reasons)
        fenced = FENCED in victim.log_path.read_text()
        with capsys.disabled():
            print(f"\nthe victim was paused {paused_s:.1f} s; on resuming it was "
                  f"{'fenced and stopped' if fenced else 'told to rejoin before it wrote'}")
    finally:
        for worker in workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGCONT)
            worker.stop()
