"""The README's DuckDB and Redis examples, run as written against the embedded S3 and Redis, on rows
written by the pipeline's own writers."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import pytest

from devstack.stack import Endpoints
from formats.rows import WindowRow
from sinks.lake import S3Lake
from sinks.redis_store import RedisWindowStore

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
START_MS = 1_796_169_600_000  # 2026-12-02T00:00:00Z
ROWS = [WindowRow("tumbling_1m", START_MS + i * 60_000, START_MS + (i + 1) * 60_000, event_type, 2 + i, 1.5 * i,
                  -1.0, 2.0) for i in range(3) for event_type in ("click", "a/b")]


def _example(name: str) -> str:
    match = re.search(rf"<!-- example: {name} -->\n```python\n(.*?)```", README, re.S)
    assert match, f"the README has no example {name!r}"
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
