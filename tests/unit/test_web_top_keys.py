"""GET /v1/aggregations/{aggregation}/{window}/top through the view, with the lake reader of
sinks/ranking.py over an in-memory lake: the newest closed window's keys ranked by a measure statistic,
against a ranking computed here from the rows written; the cache by ETag; 400s and 404s."""

from __future__ import annotations

import asyncio
import hashlib
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aggregations.spec import parse_spec
from formats.aggregates import AggregateRow, MeasureStats, aggregate_row_to_api, aggregate_rows_to_parquet
from formats.lake import spec_aggregate_key
from sinks.ranking import ObjectCache, TopKeys, read_top_keys
from tables.windows import parse_windows
from web.admission import Admission
from web.views import AggregationTopView

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
SPEC = parse_spec((ROOT / "deploy/aggregations/iot.toml").read_text(), [w.name for w in WINDOWS])
DEVICES = SPEC.aggregations[0]  # key device.id, measures metrics.temp and metrics.hum
LAYOUT = DEVICES.layout()
PREFIX = "lake/"
T0 = 1_796_000_400_000  # 2026-11-30T01:00:00Z, a whole hour
MINUTE = 60_000
HOUR = 3_600_000


class MemoryLake:
    """The LakeReader part of sinks/lake.S3Lake over a dict."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.gets: list[str] = []
        self.lists: list[str] = []

    bucket = "bucket"
    prefix = PREFIX

    def list_etags(self, prefix: str) -> dict[str, str]:
        return {key: hashlib.md5(body).hexdigest() for key, body in sorted(self.objects.items())  # noqa: S324
                if key.startswith(prefix)}

    def list_folders(self, prefix: str) -> list[str]:
        self.lists.append(prefix)
        return sorted({prefix + key[len(prefix):].split("/", 1)[0] + "/" for key in self.objects
                       if key.startswith(prefix) and "/" in key[len(prefix):]})

    def get_bytes(self, key: str) -> bytes:
        self.gets.append(key)
        return self.objects[key]


def window_rows(rng: random.Random, start: int, devices: int) -> list[AggregateRow]:
    rows = []
    for d in range(devices):
        temp = None if d % 7 == 3 else MeasureStats(c := rng.randint(1, 5), c * 20.0 + rng.randint(-9, 9),
                                                    rng.uniform(0, 20), rng.uniform(20, 40))
        hum = MeasureStats(2, float(rng.randint(0, 200)), 1.0, 99.0)
        rows.append(AggregateRow("devices", "tumbling_1m", start, start + MINUTE, (f"d-{d:03d}",), (temp, hum)))
    return rows


def write(lake: MemoryLake, rows: list[AggregateRow], parts: int) -> None:
    """The rows of one window instance as `parts` objects, as stage 2's partitions would write them."""
    start = rows[0].window_start_ms
    for part in range(parts):
        mine = rows[part::parts]
        lake.objects[spec_aggregate_key(PREFIX, "devices", "tumbling_1m", start, part)] = \
            aggregate_rows_to_parquet(mine, LAYOUT)


def expected(rows: list[AggregateRow], measure: int, statistic: str, descending: bool, n: int) -> list[AggregateRow]:
    """The reference ranking: rows with the measure, by the statistic, ties by key."""
    def value(row: AggregateRow) -> float:
        stats = row.measures[measure]
        assert stats is not None
        return float(getattr(stats, statistic))

    having = [row for row in rows if row.measures[measure] is not None]
    ranked = sorted(having, key=lambda row: (-value(row) if descending else value(row), row.key))
    return ranked[:n]


def get(lake: MemoryLake, cache: ObjectCache, low_ms: int | None, **query: str) -> SimpleNamespace:
    async def read_top_keys_(aggregation: str, layout: Any, window: str, newest: int, measure: str, statistic: str,
                             descending: bool, n: int, exact: bool) -> TopKeys:
        return read_top_keys(lake, cache, aggregation, layout, window, newest, measure, statistic, descending, n,
                             exact)

    class Web:
        def json(self, value: Any, *, status: int = 200, **_: Any) -> SimpleNamespace:
            return SimpleNamespace(status=status, body=value, headers={})

    sensors = SimpleNamespace(on_web_request_start=lambda *a, **k: None, on_web_request_end=lambda *a, **k: None)
    settings = SimpleNamespace(web=SimpleNamespace(auth_token=""), pipeline=SimpleNamespace(spec=SPEC, windows=WINDOWS))
    stats = SimpleNamespace(low_frontier_ms=low_ms, low_frontier_advanced_at_ms=None)
    app = SimpleNamespace(settings=settings, sensors=sensors, stats=stats, admission=Admission(1000),
                          outputs=SimpleNamespace(read_top_keys=read_top_keys_), pipeline=None)
    request = SimpleNamespace(method="GET", match_info={"aggregation": "devices", "window": "tumbling_1m"},
                              query=query, headers={})
    view = AggregationTopView(app, Web())  # type: ignore[arg-type]
    view.watermark = lambda: {}  # type: ignore[method-assign]
    return asyncio.run(view.dispatch(request))


@pytest.fixture
def lake() -> tuple[MemoryLake, dict[int, list[AggregateRow]]]:
    rng = random.Random(7)
    memory = MemoryLake()
    written = {}
    for minute in (0, 1, 2):  # the third is still open at the watermark below: its objects must not count
        rows = window_rows(rng, T0 + minute * MINUTE, 40)
        write(memory, rows, parts=3)
        written[T0 + minute * MINUTE] = rows
    memory.objects[f"{PREFIX}aggregated/devices/tumbling_1m/year=2026/month=11/day=30/hour=01/notes.txt"] = b"x"
    return memory, written


@pytest.mark.parametrize(("measure", "index", "statistic", "order"), [
    ("metrics_temp.mean", 0, "mean", "desc"), ("metrics_temp.max", 0, "max", "asc"),
    ("metrics_hum.sum", 1, "sum", "desc"), ("metrics_temp.count", 0, "count", "desc")])
def test_the_newest_closed_window_ranked(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]], measure: str,
                                         index: int, statistic: str, order: str) -> None:
    memory, written = lake
    low = T0 + 2 * MINUTE + 30_000  # minutes 0 and 1 closed, minute 2 open
    response = get(memory, ObjectCache(), low, measure=measure, order=order, limit="7")
    assert response.status == 200, response.body
    body = response.body
    rows = written[T0 + MINUTE]
    want = expected(rows, index, statistic, order == "desc", 7)
    assert body["top"] == [aggregate_row_to_api(row, LAYOUT) for row in want]
    assert (body["window_start_ms"], body["parts"], body["measure"], body["order"]) == \
        (T0 + MINUTE, 3, measure, order)
    assert body["keys"] == sum(1 for row in rows if row.measures[index] is not None)


def test_a_given_start_and_an_open_one(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]]) -> None:
    memory, written = lake
    low = T0 + 2 * MINUTE + 30_000
    response = get(memory, ObjectCache(), low, measure="metrics_temp.min", start=str(T0), limit="1000")
    want = expected(written[T0], 0, "min", True, 1000)
    assert response.body["top"] == [aggregate_row_to_api(row, LAYOUT) for row in want]
    assert response.body["window_start"] == "2026-11-30T01:00:00Z"
    response = get(memory, ObjectCache(), low, measure="metrics_temp.min", start=str(T0 + 2 * MINUTE))
    assert response.status == 404
    assert "not closed yet" in response.body["error"]["message"]


def test_no_watermark_or_no_closed_window_answer_no_window(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]]
                                                           ) -> None:
    memory, _ = lake
    assert get(memory, ObjectCache(), None, measure="metrics_temp.mean").body["window_start_ms"] is None
    body = get(memory, ObjectCache(), T0 + MINUTE - 1, measure="metrics_temp.mean").body  # minute 0 still open
    assert (body["window_start_ms"], body["top"], body["keys"], body["parts"]) == (None, [], 0, 0)
    assert memory.gets == []


def test_the_newest_window_found_in_an_earlier_hour_or_day(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]]
                                                          ) -> None:
    memory, written = lake
    later = window_rows(random.Random(8), T0 + 5 * HOUR, 4)  # after the first watermark below: left out then
    write(memory, later, parts=2)
    for low, rows in ((T0 + 3 * HOUR, written[T0 + 2 * MINUTE]), (T0 + 3 * 24 * HOUR, later)):
        memory.lists.clear()
        body = get(memory, ObjectCache(), low, measure="metrics_temp.sum", limit="1000").body
        assert body["window_start_ms"] == rows[0].window_start_ms
        assert body["top"] == [aggregate_row_to_api(r, LAYOUT) for r in expected(rows, 0, "sum", True, 1000)]
        assert len(memory.lists) <= 4  # a LIST per folder level walked, not one per hour between


def test_objects_are_read_once_until_their_etag_changes(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]]) -> None:
    memory, written = lake
    cache = ObjectCache()
    low = T0 + 2 * MINUTE
    first = get(memory, cache, low, measure="metrics_temp.sum").body
    assert len(memory.gets) == 3
    assert get(memory, cache, low, measure="metrics_hum.max").body["parts"] == 3
    assert len(memory.gets) == 3
    restated = [row._replace(measures=(MeasureStats(1, 1e9, 1e9, 1e9), row.measures[1]), revision=1)
                if row.key == ("d-005",) else row for row in written[T0 + MINUTE]]
    write(memory, restated, parts=3)  # the batch layer restates one key: one object changes
    again = get(memory, cache, low, measure="metrics_temp.sum").body
    assert len(memory.gets) == 4
    assert again["top"][0]["key"] == {"device_id": "d-005"} and again["top"][0]["revision"] == 1
    others = [row for row in first["top"] if row["key"] != {"device_id": "d-005"}]
    assert again["top"][1:] == others[:len(again["top"]) - 1]


@pytest.mark.parametrize(("query", "status", "message"), [
    ({"measure": "metrics_temp.p99"}, 400, "measure must be <measure>.<statistic>"),
    ({}, 400, "measure must be"),
    ({"measure": "device_id.max"}, 400, "measure must be"),
    ({"measure": "metrics_temp.max", "order": "up"}, 400, "order must be"),
    ({"measure": "metrics_temp.max", "limit": "0"}, 400, "limit must be"),
    ({"measure": "metrics_temp.max", "start": "12"}, 400, "start"),
])
def test_bad_parameters(lake: tuple[MemoryLake, dict[int, list[AggregateRow]]], query: dict[str, str], status: int,
                        message: str) -> None:
    memory, _ = lake
    response = get(memory, ObjectCache(), T0 + 2 * MINUTE, **query)
    assert response.status == status
    assert message in response.body["error"]["message"]
    assert memory.gets == []
