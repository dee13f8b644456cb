"""Production defaults, as a user meets them: faust's own endpoints off, the API behind a token when
one is set, configuration that would corrupt data refused with one line, and no secret in the logs."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import groundtruth as gt
import pytest
from helpers import create_topics, wait_for
from pipeline_harness import (
    ROOT,
    OwnRedis,
    Worker,
    names_for,
    produce,
    read_aggregates,
    run,
    web_port,
    worker_env,
)
from pipeline_harness import (
    create_topics as create_pipeline_topics,
)

from agents.faust_compat import SEND_REFUSED
from devstack.stack import Endpoints

TOKEN = "s3cret-token-0123456789"
DEADLINE_S = 120.0


def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _faust(env: dict[str, str], *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "faust", "-A", "app", *args], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=timeout_s)


@pytest.mark.timeout(300)
def test_procfile_settings_close_fausts_endpoints_and_the_token_guards_the_api(stack: Endpoints, unique_name: str,
                                                                             tmp_path: Path) -> None:
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "WEB_BIND": "0.0.0.0", "WEB_AUTH_TOKEN": TOKEN}
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        port = worker.port
        wait_for(lambda: _get(port, "/v1/health/ready")[0] == 200, timeout_s=DEADLINE_S, what="the worker to be ready")
        for path in ("/router", "/router/", "/table", "/table/partials", "/graph", "/stats", "/performance"):
            status, _ = _get(port, path, TOKEN)
            assert status == 404, (path, status)
        status, body = _get(port, "/v1/status")
        assert status == 401 and b'"status":401' in body
        assert _get(port, "/v1/status", "wrong-token-0123456789")[0] == 401
        assert _get(port, "/v1/status", TOKEN)[0] == 200
        assert _get(port, "/v1/windows/tumbling_1m/open", TOKEN)[0] == 200  # gathered from itself, token and all
        assert _get(port, "/metrics")[0] == 200  # Prometheus scrapes without it
        assert _get(port, "/v1/health/live")[0] == 200  # and so do the platform's probes
        assert _get(port, "/")[0] == 200  # the dashboard page, which then asks for the token
    finally:
        worker.stop()
    assert TOKEN not in worker.log_path.read_text()


@pytest.mark.timeout(300)
def test_a_partition_count_unlike_the_input_topics_stops_the_worker_with_one_line(stack: Endpoints,
                                                                                   unique_name: str,
                                                                                   tmp_path: Path) -> None:
    names = names_for(unique_name)
    run(create_topics(stack.broker_url.removeprefix("kafka://"), [names.events], 8))
    env = worker_env(stack, names, tmp_path / "state", web_port())  # TOPIC_PARTITIONS=4
    result = _faust(env, "worker", "-l", "warn", timeout_s=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: topic {names.events} has 8 partitions but TOPIC_PARTITIONS is 4: set "
                         f"TOPIC_PARTITIONS=8, or use a topic with 4 partitions")


def test_a_state_dir_that_cannot_be_made_stops_the_worker_with_one_line(stack: Endpoints, unique_name: str,
                                                                      tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    state_dir = tmp_path / "a-file" / "state"
    result = _faust(worker_env(stack, names_for(unique_name), state_dir, web_port()), "worker", "-l", "warn")
    assert (result.returncode, result.stderr.strip()) == (
        2, f"error: STATE_DIR {state_dir} cannot be created: Not a directory")


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])  # nothing listens there once the block ends


STARTUP_S = 3  # STARTUP_TIMEOUT of the tests below: each process must end within it (and its start-up)


@pytest.mark.parametrize("command", [("worker", "-l", "warn"), ("produce", "--count", "1"), ("batch",)])
def test_a_broker_that_does_not_answer_stops_each_command_in_one_line_after_the_wait(
        stack: Endpoints, unique_name: str, tmp_path: Path, command: tuple[str, ...]) -> None:
    port = _closed_port()
    env = {**worker_env(stack, names_for(unique_name), tmp_path / "state", web_port()),
           "BROKER_URL": f"kafka://127.0.0.1:{port}", "STARTUP_TIMEOUT": f"{STARTUP_S}s"}
    started = time.monotonic()
    result = _faust(env, *command)
    assert time.monotonic() - started < STARTUP_S + 30, "not within the wait"
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    expected = (f"error: BROKER_URL: no broker answered at 127.0.0.1:{port} within {STARTUP_S} s "
                "(STARTUP_TIMEOUT; last: ")
    assert len(errors) == 1 and errors[0].startswith(expected), errors
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("command", [("worker", "-l", "warn"), ("batch",)])
def test_a_missing_bucket_or_a_refused_redis_password_stops_the_worker_and_batch_in_one_line(
        stack: Endpoints, unique_name: str, tmp_path: Path, command: tuple[str, ...]) -> None:
    names = names_for(unique_name)
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "STARTUP_TIMEOUT": f"{STARTUP_S}s"}
    run(create_pipeline_topics(stack, names))
    result = _faust(env, *command)  # the bucket does not exist
    assert (result.returncode, result.stderr.strip()) == (
        2, f"error: LAKE_URL: S3 bucket {names.bucket!r} does not exist (check of s3://{names.bucket}/)"), (
        result.stdout[-2000:])
    stack.s3_client().create_bucket(Bucket=names.bucket)
    password = "not-the-password-5e6f7a8b"
    redis = OwnRedis(tmp_path / "redis", password="the-password-0a1b2c3d")  # (one without any takes every password)
    redis.start()
    try:
        result = _faust({**env, "REDIS_URL": redis.url.replace("the-password-0a1b2c3d", password)}, *command)
    finally:
        redis.stop()
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stderr.strip().startswith("error: REDIS_URL: Redis check at redis://127.0.0.1:"), result.stderr
    assert "\n" not in result.stderr.strip() and password not in result.stdout + result.stderr


def test_fausts_own_flags_and_variables_are_refused_with_one_line(stack: Endpoints, unique_name: str,
                                                                 tmp_path: Path) -> None:
    env = worker_env(stack, names_for(unique_name), tmp_path / "state", web_port())
    result = _faust(env, "worker", "-p", "1")
    assert (result.returncode, result.stderr.strip()) == (2, "error: faust's -p/--web-port is not supported here: "
                                                            "it bypasses the pipeline's settings; set WEB_PORT instead")
    result = _faust(env, "worker", "-b", "0.0.0.0")  # the worker's -b is --web-bind
    assert result.returncode == 2 and result.stderr.strip().endswith("set WEB_BIND instead")
    result = _faust(env, "worker", "-h", "example.com")
    assert result.returncode == 2 and result.stderr.strip().endswith("set WEB_HOST instead")
    result = _faust(env, "worker", "--without-web")
    assert result.returncode == 2 and "--without-web" in result.stderr
    result = _faust(env, "worker", "--web-transport", "unix:///tmp/pipeline.sock")
    assert result.returncode == 2 and result.stderr.strip().endswith("set WEB_BIND and WEB_PORT instead")
    # faust's send would write with faust's own producer, outside the Kafka settings.
    result = _faust(env, "send", names_for(unique_name).events, '{"user_id": "u"}')
    assert (result.returncode, result.stderr.strip()) == (2, SEND_REFUSED)
    result = _faust({**env, "FAUST_BROKER": "kafka://127.0.0.1:1"}, "worker")
    assert (result.returncode, result.stderr.strip()) == (
        2, "error: invalid setting FAUST_BROKER: faust's own variables are not read; the settings are the variables "
           "in the README's table (e.g. BROKER_URL, WEB_PORT)")
    result = _faust({**env, "WEB_PORT": "abc"}, "worker", "--help")
    assert result.returncode == 0 and "Start worker instance" in result.stdout


@pytest.mark.timeout(300)
def test_no_secret_reaches_the_logs(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    password = "redis-pass-9f8e7d6c5b"
    redis = OwnRedis(tmp_path / "redis", password=password)
    redis.start()
    names = names_for(unique_name)
    s3 = stack.s3_client()
    s3.create_bucket(Bucket=names.bucket)
    run(create_pipeline_topics(stack, names))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "REDIS_URL": redis.url,
           "WEB_AUTH_TOKEN": TOKEN, "LOG_LEVEL": "debug"}
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        # Events and the sentinels: windows close and are written to the password-protected Redis.
        run(produce(stack, names.events, gt.phase1(60)[0][:200] + gt.sentinels()))
        # A window counts as exported once its rows are in S3 and then Redis.
        wait_for(lambda: worker.status()["rows_exported"] > 0, timeout_s=DEADLINE_S,
                 what="a window exported to S3 and Redis")
        assert read_aggregates(s3, names.bucket)
    finally:
        worker.stop()
        redis.stop()
    # And a worker that cannot authenticate to Kafka (the embedded broker has no SASL) says so without it.
    kafka_password = "kafka-pass-1a2b3c4d5e"
    sasl = {**env, "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "user",
            "KAFKA_SASL_PASSWORD": kafka_password}
    try:
        failed = _faust(sasl, "worker", "-l", "debug", timeout_s=40)
        output = failed.stdout + failed.stderr
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
    logs = worker.log_path.read_text()
    for secret in (password, TOKEN, kafka_password):
        assert secret not in logs and secret not in output
