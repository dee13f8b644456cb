"""GET /v1/rollups/{period} through the view with a fake app: the range, type and limit it asks the
lake reader for, JSON errors for bad parameters (400), store failures and too many reads (503)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from formats.batch import RollupRow, rollup_to_api
from sinks.outputs import ReadsBusyError
from sinks.policy import S3BucketNotFoundError, SinkUnavailableError
from sinks.rollups import RollupRead
from web.admission import Admission
from web.views import RollupsView

HOUR_MS = 3_600_000
NOV1_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
ROWS = [RollupRow("hourly", NOV1_MS + h * HOUR_MS, NOV1_MS + (h + 1) * HOUR_MS, t, 2, 3.5, 1.0, 2.5, 1, 1.0, 2.5, 2.5)
        for h in (21, 22) for t in ("click", "<b>view</b>")]


@dataclass
class FakeOutputs:
    failure: Exception | None = None
    asked: list[tuple[str, int, int, str | None, int]] = field(default_factory=list)

    async def read_rollups(self, period: str, from_ms: int, to_ms: int, event_type: str | None,
                           limit: int) -> RollupRead:
        self.asked.append((period, from_ms, to_ms, event_type, limit))
        if self.failure is not None:
            raise self.failure
        rows = [row for row in ROWS if event_type is None or row.event_type == event_type]
        return RollupRead(rows[:limit], ["aggregated/hourly/broken.parquet"], len(rows) > limit)


class FakeWeb:
    def json(self, value: Any, *, content_type: str | None = None, status: int = 200, reason: str | None = None,
             headers: Any = None) -> SimpleNamespace:
        return SimpleNamespace(status=status, body=value, headers={})


def get(outputs: FakeOutputs, period: str, **query: str) -> SimpleNamespace:
    sensors = SimpleNamespace(on_web_request_start=lambda *a, **k: None, on_web_request_end=lambda *a, **k: None)
    settings = SimpleNamespace(web=SimpleNamespace(auth_token=""), pipeline=SimpleNamespace(spec=None))
    app = SimpleNamespace(settings=settings, sensors=sensors, outputs=outputs, admission=Admission(1000))
    request = SimpleNamespace(method="GET", match_info={"period": period}, query=query, headers={})
    return asyncio.run(RollupsView(app, FakeWeb()).dispatch(request))  # type: ignore[arg-type]


def test_the_rows_of_the_range_filtered_by_event_type() -> None:
    outputs = FakeOutputs()
    response = get(outputs, "hourly", **{"from": "2026-11-01T21:30Z", "to": "2026-11-01T23:00Z",
                                         "event_type": "<b>view</b>"})
    assert response.status == 200
    assert outputs.asked == [("hourly", NOV1_MS + 21 * HOUR_MS, NOV1_MS + 23 * HOUR_MS, "<b>view</b>", 1000)]
    assert response.body == {"period": "hourly", "from_ms": NOV1_MS + 21 * HOUR_MS, "to_ms": NOV1_MS + 23 * HOUR_MS,
                             "from": "2026-11-01T21:00:00Z", "to": "2026-11-01T23:00:00Z", "event_type": "<b>view</b>",
                             "rollups": [rollup_to_api(r) for r in ROWS if r.event_type == "<b>view</b>"],
                             "truncated": False, "skipped": ["aggregated/hourly/broken.parquet"]}


def test_a_limit_caps_the_rows_and_says_so() -> None:
    outputs = FakeOutputs()
    response = get(outputs, "hourly", limit="3")
    assert (response.status, outputs.asked[0][4]) == (200, 3)
    assert (response.body["rollups"], response.body["truncated"]) == ([rollup_to_api(r) for r in ROWS[:3]], True)
    assert get(outputs, "hourly", limit="10000").body["truncated"] is False
    response = get(outputs, "hourly", limit="10001")
    assert response.status == 400 and "limit must be an integer from 1 to 10000" in response.body["error"]["message"]


def test_too_many_reads_waiting_answers_503_with_retry_after() -> None:
    response = get(FakeOutputs(ReadsBusyError("34 reads in progress or waiting; try again shortly")), "hourly")
    assert (response.status, response.headers) == (503, {"Retry-After": "1"})
    assert response.body["error"]["message"] == "busy: 34 reads in progress or waiting; try again shortly"


@pytest.mark.parametrize(("period", "query", "message"), [
    ("weekly", {}, "unknown rollup period 'weekly'; periods: hourly, daily"),
    ("hourly", {"from": "soon"}, "from: expected ISO-8601"),
    ("daily", {"from": "2026-11-02", "to": "2026-11-01"}, "to (2026-11-01T00:00:00Z) must be after from"),
    ("hourly", {"from": "2026-10-01", "to": "2026-11-01"}, "from 2026-10-01T00:00:00Z to 2026-11-01T00:00:00Z spans "
                                                          "744 hourly periods; at most 168 per request"),
    ("hourly", {"limit": "0"}, "limit must be an integer from 1 to 10000"),
])
def test_bad_parameters_answer_400_without_reading_the_lake(period: str, query: dict[str, str], message: str) -> None:
    outputs = FakeOutputs()
    response = get(outputs, period, **query)
    assert response.status == 400 and response.body["error"]["status"] == 400
    assert response.body["error"]["message"].startswith(message), response.body
    assert outputs.asked == []


@pytest.mark.parametrize("failure", [SinkUnavailableError("S3 list of s3://lake/aggregated/ failed: ConnectTimeout"),
                                     S3BucketNotFoundError("S3 bucket 'lake' does not exist")])
def test_store_failures_answer_503(failure: Exception) -> None:
    response = get(FakeOutputs(failure), "daily")
    assert response.status == 503
    assert response.body == {"error": {"status": 503, "message": f"store unavailable: {failure}"}}
