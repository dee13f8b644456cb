"""Restore time of the stages: `make bench-restore EVENTS=1000000` (DEVSTACK_BROKER picks the broker).

Preloads EVENTS events (as `make bench`: 3 event types, or a spec's keys with --spec), runs one worker
over them to the end, stops it (SIGTERM), and then starts a worker over the same topics, once with its
STATE_DIR (a restart on the same machine: the local RocksDB, then the changelogs after its checkpoints)
and once with an empty one (a new machine: the changelogs from their start; on Kafka, what compaction
left of them, on Tansu all of them). Each restart is timed by the stages themselves: the log line
"<stage>: partitions ... ready in N s" covers starting the partitions' writers, restoring their state
and reading the output topics' tails. Reported: those seconds per stage, and the changelogs' sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.__main__ import (
    PARTITIONS,
    ROOT,
    embedded_stack,
    machine,
    measure_worker,
    preload,
    worker_env,
)
from bench.spec import KeyShape
from devstack.ports import free_port_block
from devstack.stack import Endpoints

READY_DEADLINE_S = 900.0
READY_LINE = re.compile(r"\] (ingest|export): partitions [\d,]+ ready in ([\d.]+)s")


async def changelog_records(bootstrap: str, topic: str) -> int:
    """Offsets in the changelog (records, commit markers and what compaction removed: the log's extent)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends, firsts = await consumer.end_offsets(tps), await consumer.beginning_offsets(tps)
        return sum(ends[tp] - firsts[tp] for tp in tps)
    finally:
        await consumer.stop()


def restart(env: dict[str, str], log_path: Path) -> dict[str, float]:
    """Start a worker, wait until it is ready, stop it: each stage's restore seconds, from its log."""
    started = time.monotonic()
    with open(log_path, "wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"], cwd=ROOT,
                                  env={**env, "LOG_LEVEL": "info"}, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            found = {stage: float(s) for stage, s in READY_LINE.findall(log_path.read_text(errors="replace"))}
            if len(found) == 2:
                return {**found, "to_ready_s": round(time.monotonic() - started, 1)}
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log_path}")
            if time.monotonic() - started > READY_DEADLINE_S:
                raise RuntimeError(f"worker not ready within {READY_DEADLINE_S:.0f}s; see {log_path}")
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def run(endpoints: Endpoints, events: int, work_dir: Path, log_dir: Path, shape: KeyShape | None) -> dict[str, Any]:
    run_id = f"restore-{uuid.uuid4().hex[:8]}"
    topic = f"{run_id}-events"
    bootstrap = endpoints.broker_url.removeprefix("kafka://")
    asyncio.run(preload(bootstrap, topic, events, None, "none", shape, None))
    spec_path = shape.spec_path if shape is not None else None
    first = measure_worker(endpoints, topic, events, work_dir, log_dir, run_id, spec_path=spec_path,
                           expected_rows=None)
    state_dir = work_dir / run_id
    sizes = {stage: asyncio.run(changelog_records(bootstrap, f"{run_id}-{stage}-state")) for stage in ("ingest",
                                                                                                      "export")}
    # Each restart from the state the first worker left: its STATE_DIR copied, or none at all. Twice each,
    # alternating; the first restart also pays the broker's first look at the stopped worker's ids.
    kept = work_dir / f"{run_id}-kept"
    shutil.copytree(state_dir, kept)
    local, fresh = [], []
    for attempt in range(2):
        shutil.rmtree(state_dir, ignore_errors=True)
        shutil.copytree(kept, state_dir)
        env = worker_env(endpoints, run_id, topic, state_dir, free_port_block(1), spec_path=spec_path)
        local.append(restart(env, log_dir / f"{run_id}-local{attempt}.log"))
        env = worker_env(endpoints, run_id, topic, work_dir / f"{run_id}-new{attempt}", free_port_block(1),
                         spec_path=spec_path)
        fresh.append(restart(env, log_dir / f"{run_id}-fresh{attempt}.log"))
    return {"events": events, "broker": endpoints.broker, "events_per_s": first["events_per_s"],
            "changelog_offsets": sizes, "with_local_state_s": local, "without_local_state_s": fresh}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restore", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--spec", type=Path, metavar="PATH", help="an aggregation spec, with --keys keys per minute")
    parser.add_argument("--keys", type=int, default=100_000)
    args = parser.parse_args(argv)
    shape = KeyShape.load(args.spec, args.keys, 2) if args.spec is not None else None
    with tempfile.TemporaryDirectory(prefix="bench-restore-") as tmp:
        log_dir = ROOT / "var" / "bench"
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}", flush=True)
        with embedded_stack(Path(tmp)) as endpoints:
            result = run(endpoints, args.events, Path(tmp), log_dir, shape)
    print(f"restore: {json.dumps(result)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
