"""`python -m commands.workers --count 2`: two worker processes on one host share the partitions, each with its
own state directory and web port, one killed is started again, and SIGTERM stops them all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from helpers import alive, descendants, wait_for
from pipeline_harness import ROOT, create_topics, names_for, run, web_port, worker_env

from devstack.stack import Endpoints

DEADLINE_S = 120.0


def _status(port: int) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status", timeout=2) as response:
        return json.loads(response.read())


@pytest.mark.timeout(300)
def test_two_workers_on_one_host_share_the_partitions_and_stop_together(stack: Endpoints, unique_name: str,
                                                                        tmp_path: Path) -> None:
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    base_port = web_port()
    env = worker_env(stack, names, tmp_path / "state", base_port)
    supervisor = subprocess.Popen([sys.executable, "-m", "commands.workers", "--count", "2", "--loglevel", "warn"],
                                  cwd=ROOT, env=env, stdout=open(tmp_path / "workers.log", "wb"),
                                  stderr=subprocess.STDOUT)
    workers: set[int] = set()
    try:
        ports = (base_port, base_port + 1)

        def shared() -> bool:
            owned = [_status(port)["assigned"]["events"] for port in ports]
            return all(owned) and sorted(p for parts in owned for p in parts) == [0, 1, 2, 3]

        wait_for(shared, timeout_s=DEADLINE_S, what="the two workers to share the input partitions")
        assert sorted(path.name for path in (tmp_path / "state").iterdir()) == ["worker-0", "worker-1"]
        workers = descendants(supervisor.pid)
        assert len([pid for pid in workers if alive(pid)]) >= 2
        # A worker that dies is started again by the supervisor.
        victim = next(pid for pid in workers if _owns_port(pid, ports[1]))
        os.kill(victim, signal.SIGKILL)

        def restarted() -> bool:
            again = [pid for pid in descendants(supervisor.pid) if pid != victim and _owns_port(pid, ports[1])]
            return bool(again) and bool(_status(ports[1]))

        wait_for(restarted, timeout_s=DEADLINE_S, what="the killed worker to be started again")
        workers |= descendants(supervisor.pid)
    finally:
        supervisor.send_signal(signal.SIGTERM)
        status = supervisor.wait(timeout=90)
    assert status == 0
    assert not [pid for pid in workers if alive(pid)], "a worker outlived the supervisor's SIGTERM"


def _owns_port(pid: int, port: int) -> bool:
    """True if the process has WEB_PORT=port in its environment (the worker, not its group leader)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"WEB_PORT={port}".encode() in environ and b"worker" in cmdline
