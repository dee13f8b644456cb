"""Run the worker as a real process on the embedded stack, feed it, and read its outputs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helpers
import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from groundtruth import PARTITIONS, Produced

from aggregations.spec import Spec
from devstack import services
from devstack.ports import free_port_block
from devstack.stack import Endpoints, without_service_urls
from formats.aggregates import AggregateRow, parquet_to_aggregate_rows
from formats.batch import AggregateRollupLayout, parquet_to_aggregate_rollup
from formats.raw import RawColumns, parquet_to_events, parquet_to_raw
from formats.rows import parquet_to_rows
from ops.process import ManagedProcess

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True)
class Names:
    app_id: str
    events: str
    dlq: str
    late: str
    alerts: str
    bucket: str
    redis_prefix: str


def names_for(unique: str) -> Names:
    return Names(app_id=unique, events=f"{unique}-events", dlq=f"{unique}-dlq", late=f"{unique}-late",
                 alerts=f"{unique}-alerts", bucket=unique, redis_prefix=f"{unique}:")


def worker_env(stack: Endpoints, names: Names, state_dir: Path, web_port: int) -> dict[str, str]:
    return {
        **without_service_urls(os.environ),
        **stack.env(),
        "PYTHONPATH": str(ROOT),
        "APP_ID": names.app_id,
        "TOPIC_EVENTS": names.events,
        "TOPIC_DLQ": names.dlq,
        "TOPIC_LATE": names.late,
        "TOPIC_ALERTS": names.alerts,
        "TOPIC_PARTITIONS": str(PARTITIONS),
        "LAKE_URL": f"s3://{names.bucket}/",
        "REDIS_KEY_PREFIX": names.redis_prefix,
        "WEB_PORT": str(web_port),
        # The tests read every window and key through the API, hundreds a second: the default rate (50) would
        # only slow them (web/admission.py is unit-tested, and the bench's --hammer measures it).
        "WEB_RATE_LIMIT": "10000",
        "STATE_DIR": str(state_dir),
        "ALLOWED_LATENESS": "10s",
        "IDLE_TIMEOUT": "1h",  # no wall-clock advance: lateness is decided by event time alone
        "ARCHIVE_MAX_AGE": "2s",
        "LOG_LEVEL": "info",
    }


class Worker:
    """`faust -A app worker` as a child process, with its status endpoint. Every worker started is in
    STARTED, for tests/conftest.py's scan of its log for the secrets it was given."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.port = int(env["WEB_PORT"])
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        STARTED.append(self)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "info"],
                                            cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def _request(self, path: str, method: str = "GET") -> urllib.request.Request:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method)
        token = self.env.get("WEB_AUTH_TOKEN")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        return request

    def status(self) -> dict[str, Any]:
        assert self.process is not None and self.process.poll() is None, f"worker exited; see {self.log_path}"
        with urllib.request.urlopen(self._request("/v1/status"), timeout=2) as response:
            return json.loads(response.read())

    def get(self, path: str, method: str = "GET") -> tuple[int, Any]:
        """(HTTP status, decoded JSON) of a request to this worker's web server; 4xx/5xx included."""
        request = self._request(path, method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            return response.read().decode()

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """SIGTERM and wait; its exit status, or None if it had to be killed after timeout_s."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None


STARTED: list[Worker] = []


def web_port() -> int:
    return free_port_block(1)


def _bootstrap(stack: Endpoints) -> str:
    return stack.broker_url.removeprefix("kafka://")


async def create_topics(stack: Endpoints, names: Names) -> None:
    await helpers.create_topics(_bootstrap(stack), [names.events, names.dlq, names.late], PARTITIONS)


async def produce(stack: Endpoints, topic: str, records: list[Produced]) -> list[int]:
    """Send in order with explicit partitions; return each record's offset."""
    producer = AIOKafkaProducer(bootstrap_servers=_bootstrap(stack), linger_ms=5, max_request_size=4_000_000)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=r.key, value=r.value, partition=r.partition) for r in records]
        return [(await f).offset for f in futures]
    finally:
        await producer.stop()


async def read_topic(stack: Endpoints, topic: str) -> list[Any]:
    """Every record of every partition, read until a fetch comes back empty."""
    # read_committed, as the README asks of the output topics' consumers: a transaction a killed or fenced
    # worker left open is aborted, and its records stay in the log.
    consumer = AIOKafkaConsumer(bootstrap_servers=_bootstrap(stack), enable_auto_commit=False,
                                isolation_level="read_committed", fetch_max_wait_ms=300)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records = []
        while batch := await consumer.getmany(*tps, timeout_ms=1_000):
            for part in batch.values():
                records.extend(part)
        return records
    finally:
        await consumer.stop()


def list_etags(client: Any, bucket: str, prefix: str) -> dict[str, str]:
    """Every object's key under `prefix`, with its ETag (a digest of its content)."""
    found: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        found.update({obj["Key"]: obj["ETag"] for obj in page.get("Contents", [])})
    return found


def list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    return list(list_etags(client, bucket, prefix))


# Decoded objects by (decoder, bucket, key, ETag): the checks read the whole lake again and again
# while they wait (thousands of small objects), and only new or rewritten objects need a GET. The
# ETag is the content's digest, so a rewritten object is read again.
_DECODED: dict[tuple[Any, str, str, str], tuple[Any, ...]] = {}


def read_objects(client: Any, bucket: str, prefix: str, decode: Any,
                 skip: tuple[str, ...] = ()) -> dict[str, list[Any]]:
    """Every object under `prefix` but those under `skip`, decoded by `decode` (bytes -> rows)."""
    found = {}
    for key, etag in list_etags(client, bucket, prefix).items():
        if key.startswith(skip):
            continue
        cached = (decode, bucket, key, etag)
        if cached not in _DECODED:
            _DECODED[cached] = tuple(decode(client.get_object(Bucket=bucket, Key=key)["Body"].read()))
        found[key] = list(_DECODED[cached])
    return found


def read_aggregates(client: Any, bucket: str) -> dict[str, list[Any]]:
    return read_objects(client, bucket, "aggregated/", parquet_to_rows)


def read_archive(client: Any, bucket: str) -> dict[str, list[Any]]:
    return read_objects(client, bucket, "events/", parquet_to_events)


def read_spec_rows(client: Any, bucket: str, spec: Spec) -> dict[str, list[AggregateRow]]:
    """Every object of every aggregation of `spec`, decoded."""
    found: dict[str, list[AggregateRow]] = {}
    for aggregation in spec.aggregations:
        layout = aggregation.layout()
        folder = f"aggregated/{aggregation.name}/"
        found.update(read_objects(client, bucket, folder,
                                  lambda body, name=aggregation.name, layout=layout: parquet_to_aggregate_rows(
                                      body, name, layout), skip=(f"{folder}hourly/", f"{folder}daily/")))
    return found


def read_spec_rollups(client: Any, bucket: str, spec: Spec) -> dict[str, list[dict[str, Any]]]:
    """Every rollup object of every aggregation of `spec`, as rows (dicts, times in epoch ms)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for aggregation in spec.aggregations:
        layout = aggregation.rollup_layout()

        def decode(body: bytes, layout: AggregateRollupLayout = layout) -> list[dict[str, Any]]:
            table = parquet_to_aggregate_rollup(body, layout)
            for i in (0, 1):
                table = table.set_column(i, table.schema.names[i], table.column(i).cast(pa.int64()))
            return table.to_pylist()

        for kind in ("hourly", "daily"):
            found.update(read_objects(client, bucket, f"aggregated/{aggregation.name}/{kind}/", decode))
    return found


def read_spec_archive(client: Any, bucket: str) -> dict[str, list[RawColumns]]:
    """The raw archive of a spec's events: one RawColumns per object."""
    return read_objects(client, bucket, "events/", lambda body: [parquet_to_raw(body)])


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class OwnRedis:
    """A Redis server of the test's own, so it can be stopped and started again mid-run."""

    def __init__(self, data_dir: Path, password: str | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.spec = services.redis(data_dir, free_port_block(1), password)
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{next(iter(self.spec.ports))}/0"
        self.log_path = data_dir / "redis.log"
        self.process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = ManagedProcess("redis", self.spec.argv, log_path=self.log_path)
        self.process.start()
        self.process.wait_ready(self.spec.ready, timeout_s=self.spec.ready_timeout_s)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace_s=10)  # SIGTERM: Redis saves its dataset before exiting
            self.process = None
