"""`make run` as a user lives it: events consumed and the web answering within 90 s, Ctrl-C
leaves no process behind, and a second run reuses the ports and the state directory."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from helpers import alive, descendants, wait_for

from devstack.ports import free_port_block, is_free
from devstack.stack import ISOLATED_PORT_COUNT, isolated_settings, without_service_urls

ROOT = Path(__file__).resolve().parents[2]
# The promise to a new user: consumption and the web server within 90 s of the command.
READY_DEADLINE_S = 90.0
# The worker gets 30 s to commit on SIGTERM, the services 5-10 s each.
STOP_DEADLINE_S = 75.0


def _status(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as response:
        return json.loads(response.read())


async def _topic_size(bootstrap: str, topic: str) -> int:
    """Records in the topic, counted by reading it: Tansu's end offsets can be one batch short."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=300)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        count = 0
        while batch := await consumer.getmany(*partitions, timeout_ms=1_000, max_records=10_000):
            count += sum(len(records) for records in batch.values())
        return count
    finally:
        await consumer.stop()


def _run_once(env: dict[str, str], log_path: Path, web_port: int) -> int:
    """One `python -m devstack run` until consumption is seen, then Ctrl-C; returns events consumed."""
    with open(log_path, "w") as log:
        run = subprocess.Popen([sys.executable, "-m", "devstack", "run", "--rate", "500"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "consumed" in log_path.read_text() and _status(web_port)["consumed_total"] > 0,
                 timeout_s=READY_DEADLINE_S, what="the worker to log consumed events and answer HTTP")
        consumed = _status(web_port)["consumed_total"]
        processes = descendants(run.pid)
        assert len(processes) >= 5, "expected S3, broker, Redis, worker and producer"
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=STOP_DEADLINE_S) == 0
        assert not [pid for pid in processes if alive(pid)], "a process outlived Ctrl-C"
    finally:
        run.kill()
        run.wait()
    return consumed


def test_run_stop_and_run_again(tmp_path: Path) -> None:
    base = free_port_block(ISOLATED_PORT_COUNT + 1)
    web_port = base + ISOLATED_PORT_COUNT
    env = {
        **without_service_urls(os.environ),
        **isolated_settings(str(tmp_path / "var"), base, "s3"),  # the default storage: topics survive
        "STATE_DIR": str(tmp_path / "var" / "state"),
        "WEB_PORT": str(web_port),
        "PYTHONPATH": str(ROOT),
    }
    consumed = _run_once(env, tmp_path / "run1.log", web_port)
    assert all(is_free(port) for port in range(base, web_port + 1)), "a port is still taken after Ctrl-C"
    state = sorted(p.relative_to(tmp_path) for p in (tmp_path / "var").rglob("*") if p.is_dir())

    with open(tmp_path / "run2.log", "w") as log:
        up = subprocess.Popen([sys.executable, "-m", "devstack", "up"], cwd=ROOT, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in (tmp_path / "run2.log").read_text(), timeout_s=60,
                 what="the stack to restart")
        # Topics live in the stack's S3: every event run 1 consumed is still in the broker.
        assert asyncio.run(_topic_size(f"127.0.0.1:{base}", "events")) >= consumed > 0
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=STOP_DEADLINE_S) == 0

    _run_once(env, tmp_path / "run3.log", web_port)
    assert set(state) <= {p.relative_to(tmp_path) for p in (tmp_path / "var").rglob("*") if p.is_dir()}
