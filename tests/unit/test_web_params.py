"""Parsing of web API parameters: every bad input is a BadParameterError (a 400), never a crash."""

from __future__ import annotations

import pytest

from events import iso_utc
from sinks.rows import WindowRow, row_to_api
from tables.windows import WindowSpec
from web.params import (
    BadParameterError,
    UnknownNameError,
    find_window,
    parse_event_type,
    parse_limit,
    parse_start,
    watermark_json,
)

TUMBLING = WindowSpec("tumbling_1m", 60_000, 60_000)
HOPPING = WindowSpec("hopping_1m", 60_000, 30_000)
START_MS = 1_795_665_060_000  # 2026-11-26T03:51:00Z


def test_iso_is_utc_with_milliseconds_only_when_present() -> None:
    assert iso_utc(START_MS) == "2026-11-26T03:51:00Z"
    assert iso_utc(START_MS + 7) == "2026-11-26T03:51:00.007Z"
    assert iso_utc(0) == "1970-01-01T00:00:00Z"


def test_find_window_names_the_configured_windows_when_unknown() -> None:
    assert find_window((TUMBLING, HOPPING), "hopping_1m") is HOPPING
    with pytest.raises(UnknownNameError, match="unknown window 'x'; configured windows: tumbling_1m, hopping_1m"):
        find_window((TUMBLING, HOPPING), "x")


@pytest.mark.parametrize(("query", "expected"), [({}, 20), ({"limit": "1"}, 1), ({"limit": "1000"}, 1000)])
def test_limit(query: dict[str, str], expected: int) -> None:
    assert parse_limit(query) == expected


@pytest.mark.parametrize("text", ["0", "1001", "-3", "x", "1.5", ""])
def test_bad_limit(text: str) -> None:
    with pytest.raises(BadParameterError, match="limit must be an integer from 1 to 1000"):
        parse_limit({"limit": text})


def test_event_type() -> None:
    assert parse_event_type({"event_type": "a/../b=c"}, required=True) == "a/../b=c"
    assert parse_event_type({}, required=False) is None
    assert parse_event_type({"event_type": ""}, required=False) is None
    with pytest.raises(BadParameterError, match="event_type is required"):
        parse_event_type({}, required=True)
    with pytest.raises(BadParameterError, match="longer than 1000"):
        parse_event_type({"event_type": "é" * 1001}, required=False)


@pytest.mark.parametrize("text", ["1795665060000", "2026-11-26T03:51:00Z", "2026-11-26T03:51:00+00:00",
                                  "2026-11-26T04:51:00+01:00", "2026-11-26T03:51:00.000Z"])
def test_start_accepts_epoch_ms_and_iso_with_zone(text: str) -> None:
    assert parse_start({"start": text}, TUMBLING) == START_MS


def test_start_must_be_a_start_of_the_window() -> None:
    assert parse_start({"start": str(START_MS + 30_000)}, HOPPING) == START_MS + 30_000
    with pytest.raises(BadParameterError, match=r"not a start of window 'tumbling_1m' .* 2026-11-26T03:51:00Z"):
        parse_start({"start": str(START_MS + 30_000)}, TUMBLING)


@pytest.mark.parametrize(("text", "message"), [
    (None, "start is required"),
    ("", "start is required"),
    ("yesterday", "epoch milliseconds or ISO-8601"),
    ("2026-11-26T03:51:00", "has no time zone"),
    ("12", "outside 2000-01-01..2100-01-01"),
    ("-60000", "outside"),
    ("99999999999999999999", "outside"),
    ("1e12", "epoch milliseconds or ISO-8601"),
])
def test_bad_start(text: str | None, message: str) -> None:
    query = {} if text is None else {"start": text}
    with pytest.raises(BadParameterError, match=message):
        parse_start(query, TUMBLING)


def test_the_api_row_carries_both_time_forms_and_the_mean() -> None:
    row = WindowRow("tumbling_1m", START_MS, START_MS + 60_000, "click", 4, 10.0, 1.0, 4.0)
    assert row_to_api(row) == {
        "window": "tumbling_1m", "event_type": "click",
        "window_start": "2026-11-26T03:51:00Z", "window_end": "2026-11-26T03:52:00Z",
        "window_start_ms": START_MS, "window_end_ms": START_MS + 60_000,
        "count": 4, "sum": 10.0, "min": 1.0, "max": 4.0, "mean": 2.5,
        "revision": 0, "late_count": 0,
    }


def test_watermark_json_reports_age_from_the_last_advance() -> None:
    assert watermark_json(START_MS, 1_000, 1_250, {1: 5, 0: 7}) == {
        "low_ms": START_MS, "low": "2026-11-26T03:51:00Z", "age_ms": 250, "by_partition": {"0": 7, "1": 5}}
    assert watermark_json(None, None, 1_250, {}) == {"low_ms": None, "low": None, "age_ms": None,
                                                      "by_partition": {}}
