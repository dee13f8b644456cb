"""The examples of the README (the quick start's DuckDB, sending an event from Python and with kcat) and of
docs/reading-results.md (DuckDB over the lake, a Redis client), run as written against the embedded Kafka, S3
and Redis, on rows written by the pipeline's own writers; only the addresses, bucket and topic are the
test's own."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from helpers import create_topics

from devstack.stack import Endpoints
from formats.rows import WindowRow
from sinks.lake import S3Lake
from sinks.redis_store import RedisWindowStore

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
READING = (ROOT / "docs" / "reading-results.md").read_text()
START_MS = 1_796_169_600_000  # 2026-12-02T00:00:00Z
ROWS = [WindowRow("tumbling_1m", START_MS + i * 60_000, START_MS + (i + 1) * 60_000, event_type, 2 + i, 1.5 * i,
                  -1.0, 2.0) for i in range(3) for event_type in ("click", "a/b")]


def _example(name: str, text: str = READING, language: str = "python") -> str:
    match = re.search(rf"<!-- example: {name} -->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"no example {name!r}"
    return match.group(1)


def _run(code: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    return namespace


def test_the_duckdb_example_reads_the_aggregated_dataset(stack: Endpoints, unique_name: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("duckdb")
    client = stack.s3_client()
    client.create_bucket(Bucket=unique_name)
    lake = S3Lake(unique_name, "", lambda: stack.s3_client())
    lake.open()
    for start in sorted({row.window_start_ms for row in ROWS}):
        lake.put_aggregates("tumbling_1m", start, 0, [row for row in ROWS if row.window_start_ms == start])
    lake.close()
    namespace = _run(_example("duckdb"), {**stack.credentials, "LAKE_URL": f"s3://{unique_name}/",
                                          "S3_ENDPOINT_URL": stack.s3_endpoint}, monkeypatch)
    want = sorted((row.event_type, dt.datetime.fromtimestamp(row.window_start_ms / 1000, dt.UTC), row.count, row.mean)
                  for row in ROWS)
    got = sorted((t, ts.astimezone(dt.UTC), c, m) for t, ts, c, m in namespace["rows"])  # type: ignore[attr-defined]
    assert got == want


def test_the_redis_example_reads_the_latest_windows_and_one_window(stack: Endpoints, unique_name: str,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    prefix = f"{unique_name}:"
    store = RedisWindowStore(stack.redis_url, prefix, ttl_ms=60_000, latest_n=60)
    store.open()
    store.write(ROWS)
    store.close()
    namespace = _run(_example("redis"), {"REDIS_URL": stack.redis_url, "REDIS_KEY_PREFIX": prefix}, monkeypatch)
    clicks = sorted((r for r in ROWS if r.event_type == "click"), key=lambda r: r.window_start_ms, reverse=True)
    assert [row["window_start_ms"] for row in namespace["latest"]] == [r.window_start_ms for r in clicks]  # type: ignore[attr-defined]
    newest = clicks[0]
    assert namespace["one"] == {"window": "tumbling_1m", "event_type": "click",
                                "window_start_ms": str(newest.window_start_ms),
                                "window_end_ms": str(newest.window_end_ms), "count": str(newest.count),
                                "sum": repr(newest.sum), "min": repr(newest.min), "max": repr(newest.max),
                                "mean": repr(newest.mean), "revision": "0", "late_count": "0"}
    assert os.environ["REDIS_KEY_PREFIX"] == prefix


def _lake_with_rows(stack: Endpoints, bucket: str) -> None:
    stack.s3_client().create_bucket(Bucket=bucket)
    lake = S3Lake(bucket, "", lambda: stack.s3_client())
    lake.open()
    for start in sorted({row.window_start_ms for row in ROWS}):
        lake.put_aggregates("tumbling_1m", start, 0, [row for row in ROWS if row.window_start_ms == start])
    lake.close()


def test_the_quick_starts_duckdb_example_prints_the_newest_windows(stack: Endpoints, unique_name: str) -> None:
    pytest.importorskip("duckdb")
    _lake_with_rows(stack, unique_name)
    code = _example("quickstart", README)
    assert 'access_key="devstack", secret_key="devstack"' in code  # the embedded stack's keys, as the README says
    assert stack.credentials["AWS_ACCESS_KEY_ID"] == "devstack"
    code = code.replace("http://127.0.0.1:8333", stack.s3_endpoint).replace('"lake/', f'"{unique_name}/')
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - the README's own example
    newest = max(row.window_start_ms for row in ROWS)
    shown = dt.datetime.fromtimestamp(newest / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")
    assert shown in printed.getvalue() and "click" in printed.getvalue() and "a/b" in printed.getvalue()


async def _read_one(bootstrap: str, topic: str) -> tuple[bytes | None, bytes | None]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
        return record.key, record.value
    finally:
        await consumer.stop()


EVENT = {"user_id": "u-42", "event_type": "click", "timestamp": "2026-12-07T12:00:00Z", "value": 1.5}


def _sent_event(stack: Endpoints, topic: str) -> tuple[bytes | None, dict[str, object]]:
    key, value = asyncio.run(_read_one(stack.broker_url.removeprefix("kafka://"), topic))
    assert value is not None
    return key, json.loads(value)


def test_the_python_send_example_writes_the_event(stack: Endpoints, unique_name: str) -> None:
    bootstrap = stack.broker_url.removeprefix("kafka://")
    asyncio.run(create_topics(bootstrap, [unique_name], 1))
    code = _example("send", README).replace("127.0.0.1:9092", bootstrap).replace('"events"', f'"{unique_name}"')
    exec(compile(code, "README.md", "exec"), {"__name__": "__main__"})  # noqa: S102 - the README's own example
    assert _sent_event(stack, unique_name) == (b"u-42", EVENT)


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat is not installed (make kcat, as root, installs it)")
def test_the_kcat_example_writes_the_same_event(stack: Endpoints, unique_name: str) -> None:
    bootstrap = stack.broker_url.removeprefix("kafka://")
    asyncio.run(create_topics(bootstrap, [unique_name], 1))
    command = _example("kcat", README, "sh").replace("127.0.0.1:9092", bootstrap)
    command = command.replace("-t events", f"-t {unique_name}")
    subprocess.run(["sh", "-c", command], check=True, timeout=60)
    assert _sent_event(stack, unique_name) == (b"u-42", EVENT)
