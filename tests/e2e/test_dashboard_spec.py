"""The dashboard of a worker running the IoT spec (AGGREGATIONS=deploy/aggregations/iot.toml), in headless
Chromium: the top keys panel takes the place of the event types' window values. The IoT readings of
tests/e2e/specref.py (phase 1, then the sentinels that close every window of it) go through a real worker
on the embedded stack; the page must then rank the keys of each aggregation's newest closed window by
the measure picked, exactly as ranked here from the reference rows, and draw each ranked key's closed
windows from Redis (the `sites` aggregation keeps every window there; `devices` only the newest, so its
chart has the ranked window only). Keys are hostile strings: they must reach the page as text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import groundtruth as gt
import pytest
import specgen
import specref
from dashboard_page import CHROMIUM, NO_CHROMIUM, PAGE_DEADLINE_MS, Page, run_in_thread
from helpers import wait_for
from pipeline_harness import Worker, create_topics, names_for, produce, read_spec_rows, web_port, worker_env

from devstack.stack import Endpoints
from formats.aggregates import AggregateRow, aggregate_row_to_api

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
PIPELINE_DEADLINE_S = 120.0
TOP_LIMIT = 10  # dashboard.js asks for the top 10
HISTORY = 60  # and for each ranked key's newest 60 closed windows (CLOSED_LIMIT)

TOP_READY = """(s, want) => s.top.aggregation === want.aggregation && s.top.window === want.window
    && s.top.measure === want.measure && s.top.order === want.order && s.top.window_start_ms === want.start
    && s.top.rows.length === want.rows && s.top.error === null"""


def ranked(rows: dict[specgen.RowKey, AggregateRow], aggregation: str, window: str, measure: int, statistic: str,
           descending: bool) -> tuple[int, list[AggregateRow]]:
    """The newest closed window of (aggregation, window) and its keys ranked as /top ranks them: by the
    statistic among keys with the measure, ties in key order (null parts first)."""
    newest = max(start for (a, w, start, _) in rows if (a, w) == (aggregation, window))
    having = [row for (a, w, start, _), row in rows.items()
              if (a, w, start) == (aggregation, window, newest) and row.measures[measure] is not None]

    def order(row: AggregateRow) -> tuple[Any, ...]:
        value = float(getattr(row.measures[measure], statistic))
        return (-value if descending else value, tuple((part is not None, part) for part in row.key))

    return newest, sorted(having, key=order)[:TOP_LIMIT]


def check_top(page: Page, want: dict[specgen.RowKey, AggregateRow], aggregation: str, window: str, measure: str,
              order: str) -> list[AggregateRow]:
    spec = specref.spec()
    found = next(a for a in spec.aggregations if a.name == aggregation)
    layout = found.layout()
    column, statistic = measure.rsplit(".", 1)
    index = list(layout.measures).index(column)
    start, top = ranked(want, aggregation, window, index, statistic, order == "desc")
    page.wait(TOP_READY, f"the top keys of {aggregation}/{window} by {measure} ({order})",
              {"aggregation": aggregation, "window": window, "measure": measure, "order": order, "start": start,
               "rows": len(top)})
    state = page.state()["top"]
    assert state["rows"] == [aggregate_row_to_api(row, layout) for row in top]
    keys = [" · ".join("null" if part is None else str(part) for part in row.key) for row in top]
    cells = page.page.locator("#top tbody tr td:nth-child(2)").all_text_contents()
    assert cells == keys  # as text: the hostile keys are not markup
    assert page.page.locator("#top-chart").get_attribute("data-series") == str(len(top))
    return top


def test_the_top_keys_of_each_aggregation_as_ranked_from_the_reference(stack: Endpoints, unique_name: str,
                                                                      tmp_path: Path, browser: Any) -> None:
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run_in_thread(create_topics(stack, names))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "AGGREGATIONS": str(specref.SPEC_PATH)}
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    try:
        phase1 = specref.phase1(40, seed=5)
        offsets = run_in_thread(produce(stack, names.events, [s.record for s in phase1]))
        frontier_ms = specgen.frontier_after(phase1)
        sentinel_offsets = run_in_thread(produce(stack, names.events, [s.record for s in specref.sentinels()]))
        want = specref.reference(list(zip(phase1, offsets, strict=True)), [], frontier_ms, sentinel_offsets).rows
        client = stack.s3_client()
        wait_for(lambda: sum(len(r) for r in read_spec_rows(client, names.bucket, specref.spec()).values())
                 >= len(want), timeout_s=PIPELINE_DEADLINE_S, what="every window of every aggregation in S3")
        wait_for(lambda: worker.status()["frontier_ms"] == specgen.SENTINEL_MS - gt.LATENESS_MS,
                 timeout_s=PIPELINE_DEADLINE_S, what="the sentinels' frontier", detail=worker.status)

        page = Page(browser, f"http://127.0.0.1:{worker.port}/")
        # The first aggregation, window and measure statistic, highest first.
        check_top(page, want, "devices", "tumbling_1m", "metrics_temp.max", "desc")
        assert page.page.locator("#values-card").is_hidden() and page.page.locator("#top-card").is_visible()
        assert "/v1/aggregations/{aggregation}/rollups/{period}" in page.page.text_content("#rollups-note")
        assert page.page.locator("#rollups-charts").is_hidden()
        assert "only the newest window" in page.page.text_content("#top-note")
        # Another aggregation (Redis keeps its every window), window, statistic and order, picked on the page.
        page.page.select_option("#agg-select", "sites")
        page.page.select_option("#agg-window-select", "hopping_1m")
        page.page.select_option("#agg-measure-select", "metrics_temp.mean")
        page.page.select_option("#agg-order-select", "asc")
        top = check_top(page, want, "sites", "hopping_1m", "metrics_temp.mean", "asc")
        # Each ranked key's line: its closed windows, as many as Redis keeps, the measure's mean at each.
        page.wait("(s) => s.top.series.every((x) => x.points.length > 1)", "each key's closed windows",
                  timeout_ms=PAGE_DEADLINE_MS)
        drawn = {s["key"]: {p["start_ms"]: p["value"] for p in s["points"]} for s in page.state()["top"]["series"]}
        expected = {}
        for row in top:
            history = sorted(((start, r.measures[0]) for (a, w, start, key), r in want.items()
                              if (a, w, key) == ("sites", "hopping_1m", row.key)), reverse=True)[:HISTORY]
            expected[" · ".join(str(part) for part in row.key)] = {
                start: None if stats is None else stats.mean for start, stats in history}
        assert drawn == expected
        assert page.page.evaluate("() => window.__xss") is None
        assert page.errors == []
    finally:
        worker.stop()
