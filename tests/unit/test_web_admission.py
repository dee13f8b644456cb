"""The turns of the /v1 requests (web/admission.py), time as data: a second's burst at once, then one
every 1/rate seconds, waiting rather than refused, and refused only past MAX_WAIT_S; and the view's 503."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from settings import SettingsError, load
from web.admission import BURST_S, MAX_WAIT_S, Admission
from web.views import AlertsView, LiveView, MetricsView, RollupsView, StatusView, WindowsView


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_turn_every_interval() -> None:
    clock = Clock()
    admission = Admission(10, clock)
    burst = int(10 * BURST_S) + 1  # the bucket is full at first: a second's worth, and the current turn
    assert [admission.reserve() for _ in range(burst)] == pytest.approx([0.0] * burst, abs=1e-9)
    waits = [admission.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    clock.now += 10  # quiet for long enough: the burst is back, not more
    assert [admission.reserve() for _ in range(burst)] == pytest.approx([0.0] * burst, abs=1e-9)
    assert admission.reserve() == pytest.approx(0.1)


def test_a_client_asking_again_at_once_is_slowed_to_the_rate() -> None:
    clock = Clock()
    admission = Admission(50, clock)
    served = 0
    end = clock.now + 60
    while clock.now < end:
        wait = admission.reserve()
        assert wait is not None
        clock.now += wait + 0.0001  # answered, and asks again
        served += 1
    assert 50 * 60 <= served <= 50 * 60 + 50 * BURST_S + 2


def test_past_the_longest_wait_a_request_is_refused_and_takes_no_turn() -> None:
    clock = Clock()
    admission = Admission(2, clock)
    waits = []
    while (wait := admission.reserve()) is not None:
        waits.append(wait)
    assert max(waits) <= MAX_WAIT_S and len(waits) == 2 * (BURST_S + MAX_WAIT_S) + 1
    assert admission.reserve() is None  # still refused: the refusals took no turn
    clock.now += 0.5
    assert admission.reserve() == pytest.approx(MAX_WAIT_S)


def test_the_rate_is_a_setting_with_bounds() -> None:
    assert load({}).web.rate_limit == 20 and load({"WEB_RATE_LIMIT": "7"}).web.rate_limit == 7
    for bad in ("0", "10001", "fast"):
        with pytest.raises(SettingsError, match="WEB_RATE_LIMIT: expected an integer from 1 to 10000"):
            load({"WEB_RATE_LIMIT": bad})


class FakeWeb:
    def json(self, value: Any, *, content_type: str | None = None, status: int = 200, reason: str | None = None,
             headers: Any = None) -> SimpleNamespace:
        return SimpleNamespace(status=status, body=value, headers={})


def test_a_refused_request_answers_503_with_retry_after() -> None:
    sensors = SimpleNamespace(on_web_request_start=lambda *a, **k: None, on_web_request_end=lambda *a, **k: None)
    stats = SimpleNamespace(low_frontier_ms=None, low_frontier_advanced_at_ms=None)
    app = SimpleNamespace(settings=load({"WEB_RATE_LIMIT": "1"}), sensors=sensors, stats=stats,
                          pipeline=SimpleNamespace(ingest=SimpleNamespace(partitions={})),
                          admission=SimpleNamespace(reserve=lambda: None))
    request = SimpleNamespace(method="GET", match_info={}, query={}, headers={})
    response = asyncio.run(WindowsView(app, FakeWeb()).dispatch(request))  # type: ignore[arg-type]
    assert (response.status, response.headers) == (503, {"Retry-After": "1"})
    assert response.body["error"]["message"] == ("busy: more than 1 requests a second (WEB_RATE_LIMIT); try again "
                                                 "shortly")


def test_what_monitors_poll_is_not_counted() -> None:
    """Answers from memory that probes, Prometheus and the bench poll never wait behind store reads."""
    assert [view.counted for view in (StatusView, LiveView, MetricsView)] == [False, True, True]
    assert LiveView.open_to_all and MetricsView.open_to_all  # not counted either: open to all
    assert RollupsView.counted and AlertsView.counted and WindowsView.counted
