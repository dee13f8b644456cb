"""The embedded stack's own promises: clear port errors and no orphan processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import alive, descendants, wait_for

from devstack.ports import PortInUseError, free_port_block
from devstack.stack import Endpoints, Stack, without_service_urls
from settings import load_devstack

ROOT = Path(__file__).resolve().parents[2]
# Redis starts in well under a second; 30 s allows for a loaded CI machine.
START_DEADLINE_S = 30.0


def _only_redis_env(stack: Endpoints, tmp_path: Path, redis_port: int) -> dict[str, str]:
    """Settings that reuse the session's broker and S3, so only Redis is started."""
    return {
        **without_service_urls(os.environ),
        "BROKER_URL": stack.broker_url,
        "S3_ENDPOINT_URL": stack.s3_endpoint,
        **stack.credentials,
        "DEVSTACK_DIR": str(tmp_path),
        "DEVSTACK_REDIS_PORT": str(redis_port),
        "PYTHONPATH": str(ROOT),
    }


def test_taken_port_is_named_with_its_setting(stack: Endpoints, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**_only_redis_env(stack, tmp_path, port)}
        with pytest.raises(PortInUseError) as caught:
            Stack(load_devstack(env), buckets=[], env=env).start()
        assert caught.value.setting == "DEVSTACK_REDIS_PORT"

        result = subprocess.run([sys.executable, "-m", "devstack", "up"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: port {port} needed by redis is already in use; set DEVSTACK_REDIS_PORT to another port"
    )


def test_stop_leaves_no_process(stack: Endpoints, tmp_path: Path) -> None:
    env = _only_redis_env(stack, tmp_path, free_port_block(1))
    own = Stack(load_devstack(env), buckets=[], env=env)
    before = descendants(os.getpid())  # the session's stack
    own.start()
    pids = descendants(os.getpid()) - before
    assert pids, "the stack started no process"
    own.stop()
    assert not [pid for pid in pids if alive(pid)]


def test_killed_supervisor_takes_its_services_along(stack: Endpoints, tmp_path: Path) -> None:
    env = _only_redis_env(stack, tmp_path, free_port_block(1))
    supervisor = subprocess.Popen([sys.executable, "-m", "devstack", "up"], cwd=ROOT, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert supervisor.stdout is not None
        for line in supervisor.stdout:  # bounded by the pytest timeout if it never comes
            if "Ctrl-C stops everything" in line:
                break
        services = descendants(supervisor.pid)
        assert services, "the supervisor started no process"
        supervisor.send_signal(signal.SIGKILL)  # no chance to clean up: the kernel must do it
        supervisor.wait(timeout=10)
        # PDEATHSIG is delivered at once; 10 s is generous for the kernel to reap.
        wait_for(lambda: not [pid for pid in services if alive(pid)], timeout_s=10, what="orphans to die")
    finally:
        supervisor.kill()
        supervisor.wait()
