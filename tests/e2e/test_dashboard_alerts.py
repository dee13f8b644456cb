"""The dashboard's alerts panel and chart markers in headless Chromium, against a worker with a small
rules file and WEB_AUTH_TOKEN set: after the token is entered in the page's form, the panel must list
exactly the active and recent alerts of the plain-Python reference (alertref.py), read back from its
DOM, and each chart must carry a marker for exactly the alerts of its window, of the types it draws.

The event set: a warm-up event per partition (so the first window judged is known, as in
test_alerts.py), then eight minutes of `error`, `click` and a hostile type, with ticks every 10 s on
every partition so that seven tumbling windows close by event time and the eighth stays open.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import groundtruth as gt
import pytest
from alertref import Ev, frontier_of, records, reference, rules_toml, web_active_of
from dashboard_page import CHROMIUM, NO_CHROMIUM, PAGE_DEADLINE_MS, Page, run_in_thread
from helpers import wait_for
from pipeline_harness import Worker, create_topics, names_for, produce, web_port, worker_env

from devstack.stack import Endpoints

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)

MINUTE = 60_000
BASE_MS = gt.BASE_MS
TOKEN = "dashboard-alerts-token"
# Markup, quotes and a path: it must reach the panel, the legend and a title as text only.
HOSTILE = "<img src=x onerror=\"window.__xss=1\">'/../é"
ERRORS = [1, 4, 5, 1, 0, 4, 3, 2]  # per minute; the last minute's window stays open
RULES: list[dict[str, Any]] = [
    {"name": "error_spike", "kind": "threshold", "window": "tumbling_1m", "event_types": ["error"],
     "measure": "count", "op": ">=", "threshold": 3, "for": 2, "severity": "critical",
     "labels": {"team": "<b>web</b>"}},
    {"name": "error_burst", "kind": "threshold", "window": "hopping_1m", "event_types": ["error"],
     "measure": "count", "op": ">=", "threshold": 5},
    {"name": "big_value", "kind": "threshold", "window": "tumbling_1m", "measure": "max", "op": ">=",
     "threshold": 90, "severity": "info"},
]
# A worker joins its group in ~5 s and handles these few hundred records in a second; the rest is
# room for a loaded 2-core machine without hiding a hang.
PIPELINE_DEADLINE_S = 120.0


def events() -> list[Ev]:
    rng = random.Random(11)
    out = []
    for i, errors in enumerate(ERRORS):
        start = BASE_MS + i * MINUTE
        out += [Ev(rng.randrange(gt.PARTITIONS), "error", start + rng.randrange(MINUTE), 1.0) for _ in range(errors)]
        out += [Ev(rng.randrange(gt.PARTITIONS), "click", start + rng.randrange(MINUTE), rng.randrange(0, 40) / 4)
                for _ in range(3)]
        if i in (2, 3):  # fires big_value at minute 2, resolves it at minute 3
            out.append(Ev(rng.randrange(gt.PARTITIONS), HOSTILE, start + 1_000, 95.0 if i == 2 else 1.0))
        out += [Ev(p, "tick", start + t + p, 0.25) for t in range(0, MINUTE, 10_000) for p in range(gt.PARTITIONS)]
    return sorted(out, key=lambda e: (e.event_ms, e.partition))


# What a panel row carries in its data attributes, and the reference's alert in the same terms.
ROW_FIELDS = """(tr) => ({ id: tr.dataset.id, rule: tr.dataset.rule, severity: tr.dataset.severity,
  state: tr.dataset.state, event_type: tr.dataset.eventType, window: tr.dataset.window,
  window_start_ms: Number(tr.dataset.startMs), window_end_ms: Number(tr.dataset.endMs),
  value: Number(tr.dataset.value), threshold: Number(tr.dataset.threshold),
  texts: [...tr.children].map((td) => td.textContent) })"""
KEYS = ("id", "rule", "severity", "state", "event_type", "window", "window_start_ms", "window_end_ms", "value",
        "threshold")


def panel_rows(page: Page, table: str) -> list[dict[str, Any]]:
    return page.page.eval_on_selector_all(f"#{table} tbody tr", f"(trs) => trs.map({ROW_FIELDS})")


def as_row(alert: dict[str, Any]) -> dict[str, Any]:
    return {k: alert[k] for k in KEYS}


def check_panel(page: Page, expected: list[dict[str, Any]], recent: list[dict[str, Any]]) -> None:
    active = web_active_of(expected)
    for table, want in (("alerts-active", active), ("alerts-recent", recent)):
        rows = panel_rows(page, table)
        assert [{k: r[k] for k in KEYS} for r in rows] == [as_row(a) for a in want], table
        # What a person reads: rule, severity, state, event type and window as the alert says, as text.
        assert [r["texts"][:5] for r in rows] == [[a["rule"], a["severity"], a["state"], a["event_type"], a["window"]]
                                                  for a in want], table
    assert page.stat("stat-alerts") == str(len(active))
    assert page.page.locator("#alerts-note").is_hidden()


def markers_of(expected: list[dict[str, Any]], window: str, types: set[str]) -> list[str]:
    return sorted(a["id"] for a in expected if a["window"] == window and a["event_type"] in types)


MARKERS_READY = """(s, want) => s.chart.window === want.window && s.chart.series.length === want.types
    && s.alerts.recent.length === want.recent && s.chart.markers.length === want.markers
    && s.chart.markersDrawn === want.drawn"""


def check_markers(page: Page, expected: list[dict[str, Any]], window: str, types: set[str]) -> None:
    want = markers_of(expected, window, types)
    page.wait(MARKERS_READY, f"the {window} chart with its {len(want)} alert markers",
              {"window": window, "types": len(types), "recent": len(expected), "markers": len(want),
               "drawn": len(want)})
    assert sorted(m["id"] for m in page.state()["chart"]["markers"]) == want
    assert page.page.get_attribute("#window-chart", "data-markers") == str(len(want))


def enter_token(page: Page) -> None:
    """The worker answers 401 until the token is given; the page asks for it in a form, as for a person."""
    try:
        page.page.wait_for_selector("#auth:not([hidden])", timeout=PAGE_DEADLINE_MS)
    except Exception:  # noqa: BLE001 - playwright's TimeoutError; a named failure instead
        raise AssertionError("the page never asked for WEB_AUTH_TOKEN") from None
    page.page.fill("#auth-token", TOKEN)
    page.page.click("#auth button[type=submit]")


def test_dashboard_shows_the_reference_alerts(stack: Endpoints, unique_name: str, tmp_path: Path,
                                              browser: Any) -> None:
    names = names_for(unique_name)
    stack.s3_client().create_bucket(Bucket=names.bucket)
    run_in_thread(create_topics(stack, names))
    rules_path = tmp_path / "rules.toml"
    rules_path.write_text(rules_toml(RULES))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "ALERT_RULES": str(rules_path),
           "WEB_AUTH_TOKEN": TOKEN}
    worker = Worker(env, tmp_path / "worker.log")
    worker.start()
    page: Page | None = None
    try:
        first = [Ev(p, "tick", BASE_MS - 30_000, 0.25) for p in range(gt.PARTITIONS)]
        run_in_thread(produce(stack, names.events, records(first)))
        wait_for(lambda: worker.status()["frontier_ms"] == frontier_of(first), timeout_s=PIPELINE_DEADLINE_S,
                 what="the frontier after the warm-up", detail=worker.status)
        phase = events()
        run_in_thread(produce(stack, names.events, records(phase)))
        last_low = frontier_of(first + phase)
        expected = reference(RULES, first + phase, frontier_of(first), last_low)
        seen = {(a["rule"], a["state"]) for a in expected}
        assert seen == {(r["name"], s) for r in RULES for s in ("firing", "resolved")}, seen
        assert any(a["event_type"] == HOSTILE for a in expected) and web_active_of(expected)
        wait_for(lambda: worker.status()["frontier_ms"] == last_low, timeout_s=PIPELINE_DEADLINE_S,
                 what="the frontier after the events", detail=worker.status)
        wait_for(lambda: len(worker.get("/v1/alerts?limit=1000")[1]["recent"]) == len(expected),
                 timeout_s=PIPELINE_DEADLINE_S, what=f"{len(expected)} alerts in /v1/alerts",
                 detail=lambda: worker.get("/v1/alerts?limit=1000"))
        _, body = worker.get("/v1/alerts?limit=1000")
        recent = body["recent"]  # the API's order (test_alerts.py checks it against the reference)
        assert sorted(map(as_row, recent), key=lambda a: a["id"]) == sorted(map(as_row, expected),
                                                                            key=lambda a: a["id"])

        page = Page(browser, f"http://127.0.0.1:{worker.port}/")
        enter_token(page)
        page.wait("(s, want) => s.alerts.recent.length === want.recent && s.alerts.active.length === want.active",
                  "the alerts panel filled", {"recent": len(expected), "active": len(web_active_of(expected))})
        check_panel(page, expected, recent)

        types = {e.event_type for e in first + phase}
        check_markers(page, expected, "tumbling_1m", types)
        # Hiding a type from the legend hides its markers, not the others'.
        legend = page.page.locator("#window-chart .u-legend .u-series .u-label")
        legend.filter(has_text=re.compile(r"^error$")).click()  # exactly: the hostile type says "onerror"
        others = markers_of(expected, "tumbling_1m", types - {"error"})
        page.wait("(s, want) => s.chart.markersDrawn === want", "the error markers hidden with its line", len(others))
        page.page.select_option("#window-select", "hopping_1m")
        check_markers(page, expected, "hopping_1m", types)
        assert markers_of(expected, "hopping_1m", types), "the hopping rule fires in this event set"

        assert page.page.evaluate("() => window.__xss") is None
        assert page.page.locator("img").count() == 0
        # Before the token, the page's requests were answered 401, which Chromium logs; nothing else.
        assert [e for e in page.errors if "401" not in e] == []
    finally:
        if page is not None:  # what the page looked like, for whoever reads a failure
            page.page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        status = worker.stop()
    assert status == 0, f"the worker did not stop cleanly (status {status}); see {worker.log_path}"
