"""The dashboard at `/` in headless Chromium, against a worker process on the embedded stack.

Events with event times from a few minutes ago are produced so that windows close by event
time; the page must then draw, for the selected window and measure, one line per event type
with exactly the values computed here from the produced events (closed windows solid, open
ones apart), and its status widgets must show what /v1/status reports. A second batch sent
while the page is open must show up as throughput, the watermark standing still since as
"stale", and stopping the worker as "unreachable". The batch rollups panel draws the rollup rows
put in the worker's lake (no batch job runs here: the objects are written as it writes them),
exactly, for two measures, and none outside its default range.
"""

from __future__ import annotations

import json
import random
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import groundtruth as gt
import pytest
from dashboard_page import CHROMIUM, NO_CHROMIUM, PAGE_DEADLINE_MS, Page, run_in_thread, sync_api
from helpers import wait_for
from pipeline_harness import Names, Worker, create_topics, names_for, produce, web_port, worker_env

from devstack.stack import Endpoints
from formats.batch import RollupRow, rollups_to_parquet
from formats.lake import rollup_key
from formats.parquet import PARQUET_CONTENT_TYPE

# Checked before any fixture runs, so a machine without Chromium does not start a stack for nothing.
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
LATENESS_MS = gt.LATENESS_MS  # worker_env sets ALLOWED_LATENESS=10s
WINDOWS = {"tumbling_1m": (60_000, 60_000), "hopping_1m": (60_000, 30_000)}  # the default WINDOWS setting
# Event types as untrusted as the contract allows: markup, quotes, a path, non-ASCII.
HOSTILE_TYPE = "<img src=x onerror=\"window.__xss=1\">'/../é"
EVENT_TYPES = ("click", "view", "purchase", HOSTILE_TYPE)
STEP_S = 2  # event time between two events of one partition
# Phase 1 spans 200 s of event time: the watermark (max event time - 10 s on every
# partition) closes three tumbling and six hopping windows and leaves later ones open.
PHASE1_S = 200
# Phase 2, sent while the page is open, adds 30 s more: it closes one more hopping window,
# and brings two late records. Each phase sends two invalid records too.
PHASE2_S = 30
BAD_RECORDS = (b"{not json", b"[1, 2, 3]")
# Deadlines. A worker joins its group in ~5 s and consumes these ~500 records in about a
# second; windows close on the next 1 s frontier tick and are exported right after. 120 s
# leaves room for a loaded 2-core CI machine without hiding a hang.
PIPELINE_DEADLINE_S = 120.0
# The worker's graceful stop can take a few seconds before its port closes.
UNREACHABLE_DEADLINE_MS = 60_000
# The page calls a watermark stale once it has not moved for 60 s (dashboard.js); with
# IDLE_TIMEOUT=1h it stops moving with the last event. 60 s plus polls and slack.
STALE_AFTER_MS = 60_000
STALE_DEADLINE_MS = 90_000


@dataclass(frozen=True, slots=True)
class Event:
    partition: int
    event_type: str
    event_ms: int
    value: float


def _events(start_ms: int, end_ms: int, rng: random.Random) -> list[Event]:
    """An event every STEP_S on every partition (7 ms apart), none after end_ms."""
    return [Event(p, rng.choice(EVENT_TYPES), t + p * 7, rng.randrange(-400, 400) / 4)
            for t in range(start_ms, end_ms + 1, STEP_S * 1000) for p in range(gt.PARTITIONS)
            if t + p * 7 <= end_ms]


def _records(events: list[Event]) -> list[gt.Produced]:
    return [gt.Produced(e.partition, b"u1", gt.encode("u1", e.event_type, e.event_ms, e.value)) for e in events]


def _frontier(events: list[Event]) -> int:
    return min(max(e.event_ms for e in events if e.partition == p) for p in range(gt.PARTITIONS)) - LATENESS_MS


def _windows_of(event_ms: int, size_ms: int, step_ms: int) -> list[int]:
    first = (event_ms - size_ms) // step_ms * step_ms + step_ms
    return list(range(first, event_ms + 1, step_ms))


@dataclass(frozen=True, slots=True)
class Expected:
    """Per (event_type, window_start): the aggregate, and whether the window is closed."""

    rows: dict[tuple[str, int], dict[str, float]]
    closed: set[tuple[str, int]]

    def values(self, measure: str, closed: bool) -> dict[str, dict[int, float]]:
        out: dict[str, dict[int, float]] = {}
        for (event_type, start), row in self.rows.items():
            if ((event_type, start) in self.closed) == closed:
                out.setdefault(event_type, {})[start] = row[measure]
        return out


def _expected(window: str, events: list[Event], late: list[Event], frontier_ms: int) -> Expected:
    """Aggregates as the pipeline must compute them; late records miss their (closed) windows."""
    size_ms, step_ms = WINDOWS[window]
    sums: dict[tuple[str, int], list[float]] = {}
    for e in events:
        for start in _windows_of(e.event_ms, size_ms, step_ms):
            sums.setdefault((e.event_type, start), []).append(e.value)
    for e in late:
        assert all(start + size_ms <= frontier_ms for start in _windows_of(e.event_ms, size_ms, step_ms))
    rows = {key: {"count": len(v), "sum": sum(v), "min": min(v), "max": max(v), "mean": sum(v) / len(v)}
            for key, v in sums.items()}
    return Expected(rows, {k for k in rows if k[1] + size_ms <= frontier_ms})


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def _api_closed(port: int, window: str) -> set[tuple[str, int]]:
    closed = _get(port, f"/v1/windows/{window}/closed?limit=100")["closed"]
    return {(event_type, row["window_start_ms"]) for event_type, rows in closed.items() for row in rows}


# The chart shows `points` closed points for `window`/`measure`, and all four event types.
CHART_READY = """(s, want) => s.chart.window === want.window && s.chart.measure === want.measure
    && s.chart.series.length === want.types
    && s.chart.series.reduce((n, x) => n + x.closed.length, 0) === want.closed
    && s.chart.series.reduce((n, x) => n + x.open.length, 0) === want.open"""


def _chart(window: str, measure: str, expected: Expected) -> dict[str, Any]:
    """CHART_READY's argument for this selection."""
    return {"window": window, "measure": measure, "types": len(EVENT_TYPES), "closed": len(expected.closed),
            "open": len(expected.rows) - len(expected.closed)}


def _check_chart(page: Page, expected: Expected, window: str, measure: str) -> None:
    state = page.state()
    chart = state["chart"]
    assert (chart["window"], chart["measure"], chart["error"]) == (window, measure, None)
    assert [s["event_type"] for s in chart["series"]] == sorted(EVENT_TYPES)
    got_closed = {s["event_type"]: {p["start_ms"]: p["value"] for p in s["closed"]} for s in chart["series"]}
    got_open = {s["event_type"]: {p["start_ms"]: p["value"] for p in s["open"]} for s in chart["series"]}
    assert got_closed == expected.values(measure, closed=True)
    assert got_open == expected.values(measure, closed=False)
    element = page.page.locator("#window-chart")
    assert element.get_attribute("data-window") == window
    assert element.get_attribute("data-series") == str(len(EVENT_TYPES))
    assert element.get_attribute("data-points") == str(len(expected.rows))
    # uPlot drew a line per event type and one per its open windows, labelled as text.
    labels = page.page.locator("#window-chart .u-legend .u-series .u-label").all_text_contents()
    assert sorted(labels[1:]) == sorted([*EVENT_TYPES, *(f"{t} (open)" for t in EVENT_TYPES)])


def _shown(status: dict[str, Any]) -> tuple[Any, ...]:
    """The /v1/status figures the widgets show."""
    return (status["consumed_total"], status["dead_letters"], status["late"], status["windows_exported"],
            status["rows_exported"], status["sink_retries"], status["lag_by_partition"], status["watermark"]["low_ms"],
            status["export_delay_ms"]["p50"], status["export_delay_ms"]["p99"])


def _status_as_shown(page: Page, worker: Worker) -> dict[str, Any]:
    """/v1/status once the page's last poll saw the same figures (lag and delays may still settle)."""
    def same() -> dict[str, Any] | None:
        status = worker.status()
        return status if _shown(page.state()["status"]) == _shown(status) else None
    return wait_for(same, timeout_s=PAGE_DEADLINE_MS / 1000, what="the page to show what /v1/status reports",
                    detail=lambda: (_shown(page.state()["status"]), _shown(worker.status())))


def _check_widgets(page: Page, status: dict[str, Any]) -> None:
    lag = sum(status["lag_by_partition"].values())
    assert page.stat("stat-consumed") == str(status["consumed_total"])
    assert page.stat("stat-dlq") == str(status["dead_letters"])
    assert page.stat("stat-late") == str(status["late"])
    assert page.stat("stat-windows-exported") == str(status["windows_exported"])
    assert page.stat("stat-rows-exported") == str(status["rows_exported"])
    assert page.stat("stat-retries") == str(status["sink_retries"])
    assert page.stat("stat-lag") == str(lag)
    assert page.stat("stat-watermark") == str(status["watermark"]["low_ms"])
    assert page.stat("stat-delay-p50") == str(status["export_delay_ms"]["p50"])
    assert page.stat("stat-delay-p99") == str(status["export_delay_ms"]["p99"])
    # What a person reads, not only the attributes.
    assert page.page.text_content("#stat-dlq") == f"{status['dead_letters']:,}"
    assert page.page.text_content("#stat-consumed") == f"{status['consumed_total']:,}"
    assert page.page.text_content("#stat-late") == f"{status['late']:,}"


def _check_throughput(page: Page) -> None:
    state = page.state()
    rate = state["rate"]
    # Each sample holds the consumed_total delta since the previous poll: they add up to what
    # the worker reports having consumed while the page watched.
    assert sum(r["delta"] for r in rate) == state["lastTotal"]["total"] - state["firstTotal"]["total"]
    assert max(r["eps"] for r in rate) > 0, "phase 2 was consumed while the page watched"
    assert rate[-1]["eps"] == 0 and page.stat("stat-throughput") == "0"
    assert page.page.get_attribute("#rate-chart", "data-points") == str(len(rate))


def _wait_pipeline(worker: Worker, offsets: list[int], records: list[gt.Produced], expected: dict[str, Expected],
                   counters: dict[str, int]) -> None:
    """Until the worker consumed `records`, exported every closed window and counts `counters`."""
    last = {str(r.partition): o for r, o in zip(records, offsets, strict=True)}
    wait_for(lambda: all(worker.status()["input_offsets"].get(p, -1) >= o for p, o in last.items()),
             timeout_s=PIPELINE_DEADLINE_S, what="the worker to consume every record", detail=worker.status)
    for window, exp in expected.items():
        wait_for(lambda w=window, e=exp: _api_closed(worker.port, w) == e.closed, timeout_s=PIPELINE_DEADLINE_S,
                 what=f"every closed {window} window in /v1/windows/{window}/closed",
                 detail=lambda w=window: sorted(_api_closed(worker.port, w)))
    wait_for(lambda: all(worker.status()[k] == v for k, v in counters.items()), timeout_s=PIPELINE_DEADLINE_S,
             what=f"the status counters to reach {counters}", detail=worker.status)


def _closed_starts(expected: Expected) -> int:
    return len({start for _, start in expected.closed})


class Scenario:
    """The events of both phases, produced to a worker, and what the pipeline must make of them."""

    def __init__(self, stack: Endpoints, worker: Worker, names: Names) -> None:
        self.stack, self.worker, self.names = stack, worker, names
        self.rng = random.Random(11)
        # Whole minutes, 5 back: the last event time is at least 70 s in the past, never
        # ahead of the wall clock, and every window is fully inside the data.
        self.base_ms = (int(time.time() * 1000) // 60_000 - 5) * 60_000
        self.events: list[Event] = []
        self.late: list[Event] = []
        self.bad = 0

    def send(self, events: list[Event], late: list[Event]) -> dict[str, Expected]:
        """Produce `events`, `late` and BAD_RECORDS; wait until all is consumed and exported."""
        self.events += events
        self.late += late
        records = _records(events) + _records(late)
        records += [gt.Produced(i % gt.PARTITIONS, b"bad", raw) for i, raw in enumerate(BAD_RECORDS)]
        self.bad += len(BAD_RECORDS)
        offsets = run_in_thread(produce(self.stack, self.names.events, records))
        frontier = _frontier(self.events)
        expected = {w: _expected(w, self.events, self.late, frontier) for w in WINDOWS}
        _wait_pipeline(self.worker, offsets, records, expected, {"dead_letters": self.bad, "late": len(self.late)})
        return expected

    def phase1(self) -> dict[str, Expected]:
        expected = self.send(_events(self.base_ms, self.base_ms + PHASE1_S * 1000, self.rng), [])
        assert (_closed_starts(expected["tumbling_1m"]), _closed_starts(expected["hopping_1m"])) == (3, 6)
        return expected

    def phase2(self) -> dict[str, Expected]:
        start_ms, end_ms = self.base_ms + (PHASE1_S + STEP_S) * 1000, self.base_ms + (PHASE1_S + PHASE2_S) * 1000
        late = [Event(p, "click", self.base_ms + 10_000, 1.0) for p in (0, 1)]
        expected = self.send(_events(start_ms, end_ms, self.rng), late)
        assert (_closed_starts(expected["tumbling_1m"]), _closed_starts(expected["hopping_1m"])) == (3, 7)
        return expected


def _check_after_phase2(page: Page, worker: Worker, expected: dict[str, Expected]) -> None:
    tumbling = expected["tumbling_1m"]
    status = worker.status()
    page.wait(CHART_READY + " && s.status.consumed_total === want.consumed && s.status.late === want.late"
              " && s.rate.length > 0 && s.rate[s.rate.length - 1].eps === 0",
              "phase 2 consumed and every window in its place",
              {**_chart("tumbling_1m", "count", tumbling), "consumed": status["consumed_total"],
               "late": status["late"]})
    _check_chart(page, tumbling, "tumbling_1m", "count")
    _check_widgets(page, _status_as_shown(page, worker))
    _check_throughput(page)


def _check_other_selection(page: Page, expected: dict[str, Expected]) -> None:
    """Another window and measure, chosen as a person would."""
    page.page.select_option("#window-select", "hopping_1m")
    page.page.select_option("#measure-select", "max")
    hopping = expected["hopping_1m"]
    page.wait(CHART_READY, "hopping_1m maxima", _chart("hopping_1m", "max", hopping))
    _check_chart(page, hopping, "hopping_1m", "max")
    assert "window=hopping_1m" in page.page.url and "measure=max" in page.page.url


def _check_text_only(page: Page) -> None:
    """The hostile event type is text in the legend and the table, never markup."""
    assert page.page.evaluate("() => window.__xss") is None
    assert HOSTILE_TYPE in page.page.locator("#latest td.type").all_text_contents()
    assert page.page.locator("img").count() == 0


def _check_watermark_state(page: Page) -> None:
    """Live while the watermark moves; then, events stopped, it is flagged stale within the deadline."""
    mode, age_ms = page.page.evaluate("() => [document.body.dataset.state, dashboardState.status.watermark.age_ms]")
    assert mode == ("stale" if age_ms > STALE_AFTER_MS else "live")
    page.wait("() => document.body.dataset.state === 'stale'", "the watermark flagged stale",
              timeout_ms=STALE_DEADLINE_MS)
    assert page.page.is_visible("#banner") and "watermark has not advanced" in page.page.text_content("#banner")
    assert "warn" in page.page.get_attribute("#tile-watermark", "class")


def _check_unreachable(page: Page, worker: Worker) -> None:
    worker.stop()
    try:
        page.page.wait_for_selector("body[data-state=unreachable]", timeout=UNREACHABLE_DEADLINE_MS)
    except sync_api.TimeoutError:
        raise AssertionError("the page never showed the stopped worker as unreachable") from None
    assert page.page.is_visible("#banner") and "unreachable" in page.page.text_content("#banner")
    # A stopped worker costs the page failed requests, which Chromium logs, but no exception.
    assert [e for e in page.errors if "net::ERR_CONNECTION_REFUSED" not in e] == []


HOUR_MS, DAY_MS = 3_600_000, 86_400_000


def _put_rollups(client: Any, bucket: str, now_ms: int) -> list[RollupRow]:
    """Rollup objects of two hours and two days inside the panel's default ranges (48 hours, 31 days) and
    one of each outside them, as the batch job writes them; returns the rows inside."""
    hour, day = now_ms - now_ms % HOUR_MS, now_ms - now_ms % DAY_MS
    rng = random.Random(3)
    inside = []
    for period, length, starts, outside in (
            ("hourly", HOUR_MS, (hour - HOUR_MS, hour - 5 * HOUR_MS), hour - 48 * HOUR_MS),
            ("daily", DAY_MS, (day, day - 3 * DAY_MS), day - 31 * DAY_MS)):
        for start in (*starts, outside):
            rows = [RollupRow(period, start, start + length, t, rng.randrange(1, 900), rng.randrange(-800, 800) / 4,
                              -100.0, 99.75, rng.randrange(1, 50), -1.5, 80.25, 99.5) for t in ("click", HOSTILE_TYPE)]
            client.put_object(Bucket=bucket, Key=rollup_key("", period, start), Body=rollups_to_parquet(rows),
                              ContentType=PARQUET_CONTENT_TYPE)
            if start != outside:
                inside += rows
    return inside


def _rollup_series(rows: list[RollupRow], period: str, measure: str) -> list[dict[str, Any]]:
    """The series the panel must draw: per event type, its points by period start."""
    value = (lambda r: r.mean) if measure == "mean" else (lambda r: getattr(r, measure))
    return [{"event_type": t, "points": [{"start_ms": r.period_start_ms, "value": value(r), "count": r.count}
                                         for r in sorted(rows, key=lambda r: r.period_start_ms)
                                         if r.period == period and r.event_type == t]}
            for t in sorted({r.event_type for r in rows})]


def _check_rollups(page: Page, rows: list[RollupRow]) -> None:
    for measure in ("count", "p95"):
        if measure != "count":
            page.page.select_option("#rollup-measure-select", measure)
        page.wait("(s, m) => s.rollups.polls >= 1 && s.rollups.measure === m", f"the rollups panel's {measure}",
                  measure)
        rollups = page.state()["rollups"]
        for period in ("hourly", "daily"):
            assert rollups[period]["error"] is None
            assert rollups[period]["series"] == _rollup_series(rows, period, measure), period
            element = page.page.locator(f"#rollup-{period}-chart")
            assert (element.get_attribute("data-measure"), element.get_attribute("data-series"),
                    element.get_attribute("data-points")) == (measure, "2", "4")


def test_dashboard_draws_what_the_pipeline_computed(stack: Endpoints, unique_name: str, tmp_path: Path,
                                                    browser: Any) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    rollups = _put_rollups(client, names.bucket, int(time.time() * 1000))
    run_in_thread(create_topics(stack, names))
    worker = Worker(worker_env(stack, names, tmp_path / "state", web_port()), tmp_path / "worker.log")
    worker.start()
    page: Page | None = None
    try:
        scenario = Scenario(stack, worker, names)
        expected = scenario.phase1()
        page = Page(browser, f"http://127.0.0.1:{worker.port}/")
        # The default selection: the first window and `count`. Two polls give a first rate.
        page.wait(CHART_READY, "the phase 1 windows", _chart("tumbling_1m", "count", expected["tumbling_1m"]))
        page.wait("(s) => s.rate.length >= 1", "a first throughput sample")
        _check_chart(page, expected["tumbling_1m"], "tumbling_1m", "count")
        _check_rollups(page, rollups)

        expected = scenario.phase2()  # while the page watches
        _check_after_phase2(page, worker, expected)
        _check_other_selection(page, expected)
        _check_text_only(page)
        _check_watermark_state(page)
        assert page.errors == []
        _check_unreachable(page, worker)
    finally:
        if page is not None:  # what the page looked like, for whoever reads a failure
            page.page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        worker.stop()
