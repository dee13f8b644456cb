"""Parsing of web API parameters: every bad input is a BadParameterError (a 400), never a crash."""

from __future__ import annotations

import pytest

from aggregations.spec import parse_spec
from formats.events import iso_utc
from formats.rows import WindowRow, row_to_api
from tables.windows import WindowSpec
from web.params import (
    BadParameterError,
    UnknownNameError,
    aggregation_to_api,
    find_aggregation,
    find_aggregation_window,
    find_window,
    page_cursor,
    parse_after,
    parse_event_type,
    parse_key,
    parse_key_filter,
    parse_limit,
    parse_rollup_range,
    parse_start,
    watermark_json,
)

TUMBLING = WindowSpec("tumbling_1m", 60_000, 60_000)
HOPPING = WindowSpec("hopping_1m", 60_000, 30_000)
WINDOWS = (TUMBLING, HOPPING)
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
    ("9999999999999999", "outside"),
    ("99999999999999999999", "more than 16 digits"),
    ("9" * 5000, "more than 16 digits"),  # int() itself refuses over 4300 digits
    ("²", "epoch milliseconds or ISO-8601"),  # a digit to str.isdigit, not to int()
    ("-²", "epoch milliseconds or ISO-8601"),
    ("0001-01-01T00:00+01:00", "outside"),  # before the epoch's range of datetime.timestamp
    ("1e12", "epoch milliseconds or ISO-8601"),
])
def test_bad_start(text: str | None, message: str) -> None:
    query = {} if text is None else {"start": text}
    with pytest.raises(BadParameterError, match=message):
        parse_start(query, TUMBLING)


def test_a_page_cursor_reads_back() -> None:
    for start, event_type in [(START_MS, "click"), (0, "a:b:c"), (START_MS, "<b>ü</b>")]:
        assert parse_after({"after": page_cursor(start, event_type)}) == (start, event_type)
    assert parse_after({}) is None and parse_after({"after": ""}) is None


@pytest.mark.parametrize("text", ["click", ":click", "12:", "-5:click", "²:click", "1" * 17 + ":click",
                                  "12:" + "x" * 1001])
def test_a_bad_page_cursor_is_a_bad_parameter(text: str) -> None:
    with pytest.raises(BadParameterError, match="after"):
        parse_after({"after": text})


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


# -- /v1/rollups/{period}: the range ---------------------------------------------------------

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
NOV1_MS = 1_793_491_200_000  # 2026-11-01T00:00:00Z
NOW_MS = NOV1_MS + 22 * HOUR_MS + 1_234  # 22:00:01.234


def test_rollup_range_defaults_to_the_periods_before_now() -> None:
    hourly = parse_rollup_range("hourly", {}, NOW_MS)
    assert (hourly.from_ms, hourly.to_ms, hourly.event_type) == (NOV1_MS - 25 * HOUR_MS, NOV1_MS + 23 * HOUR_MS, None)
    daily = parse_rollup_range("daily", {"event_type": "click"}, NOW_MS)
    assert (daily.from_ms, daily.to_ms, daily.event_type) == (NOV1_MS - 30 * DAY_MS, NOV1_MS + DAY_MS, "click")


@pytest.mark.parametrize(("query", "start", "end"), [
    ({"from": "2026-11-01", "to": "2026-11-02"}, NOV1_MS, NOV1_MS + DAY_MS),
    ({"from": "2026-11-01T22:30Z", "to": "2026-11-01T23:00:00+00:00"}, NOV1_MS + 22 * HOUR_MS, NOV1_MS + 23 * HOUR_MS),
    ({"from": "2026-11-01T22:30"}, NOV1_MS + 22 * HOUR_MS, NOV1_MS + 22 * HOUR_MS + 1_800_000 + 48 * HOUR_MS),
    ({"to": str(NOV1_MS)}, NOV1_MS - 48 * HOUR_MS, NOV1_MS),
    ({"from": "", "to": ""}, NOV1_MS - 25 * HOUR_MS, NOV1_MS + 23 * HOUR_MS),  # empty is absent
])
def test_rollup_range_from_and_to(query: dict[str, str], start: int, end: int) -> None:
    got = parse_rollup_range("hourly", query, NOW_MS)
    assert (got.period, got.from_ms, got.to_ms) == ("hourly", start, end)


@pytest.mark.parametrize(("period", "query", "message"), [
    ("weekly", {}, "unknown rollup period 'weekly'; periods: hourly, daily"),
    ("hourly", {"from": "yesterday"}, "from: expected ISO-8601 such as 2026-11-01T22:00Z or 2026-11-01, or epoch "
                                      "milliseconds (got 'yesterday')"),
    ("hourly", {"to": "2026-11-31"}, "to: expected ISO-8601"),
    ("hourly", {"from": "1999-12-31"}, "from: expected a time from 2000-01-01 on (got '1999-12-31')"),
    ("daily", {"to": "2100-01-02"}, "to '2100-01-02' is outside 2000-01-01..2100-01-01"),
    ("hourly", {"from": "2026-11-02", "to": "2026-11-01"},
     "to (2026-11-01T00:00:00Z) must be after from (2026-11-02T00:00:00Z)"),
    ("hourly", {"from": "2026-11-01", "to": "2026-11-01"},
     "to (2026-11-01T00:00:00Z) must be after from (2026-11-01T00:00:00Z)"),
    ("hourly", {"from": "2026-11-01", "to": "2026-11-08T00:00:01Z"},
     "from 2026-11-01T00:00:00Z to 2026-11-08T00:00:01Z spans 169 hourly periods; at most 168 per request"),
    ("daily", {"from": "2026-01-01", "to": "2026-12-01"},
     "from 2026-01-01T00:00:00Z to 2026-12-01T00:00:00Z spans 334 daily periods; at most 92 per request"),
    ("hourly", {"event_type": "x" * 1001}, "event_type is longer than 1000 characters"),
])
def test_rollup_range_refuses(period: str, query: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameterError) as raised:
        parse_rollup_range(period, query, NOW_MS)
    assert str(raised.value).startswith(message), str(raised.value)


def test_rollup_range_at_its_bounds() -> None:
    week = parse_rollup_range("hourly", {"from": "2026-11-01", "to": "2026-11-08"}, NOW_MS)
    assert week.to_ms == NOV1_MS + 7 * DAY_MS
    assert parse_rollup_range("daily", {"from": "2026-11-01T23:59Z", "to": "2027-01-31T00:00:01Z"},
                              NOW_MS).from_ms == NOV1_MS  # 92 days from Nov 1, the last one entered by a second


_SPEC = parse_spec('[time]\nfield = "ts"\nformat = "epoch_ms"\n'
                   '[[aggregation]]\nname = "pages"\nkey = ["page.path", "status:int", "bot:bool"]\n'
                   'missing_key = "null"\nmeasures = ["ms"]\nwindows = ["tumbling_1m"]\n'
                   '[[aggregation]]\nname = "users"\nkey = ["uid"]\nmeasures = ["ms"]\nredis = "off"\n'
                   'where = { country = ["DE", "FR"] }\ndistinct = ["session:int"]\n',
                   ["tumbling_1m", "hopping_1m"])


def test_find_aggregation_names_the_spec_or_its_absence() -> None:
    assert find_aggregation(_SPEC, "users").name == "users"
    with pytest.raises(UnknownNameError, match="unknown aggregation 'x'; aggregations: pages, users"):
        find_aggregation(_SPEC, "x")
    with pytest.raises(UnknownNameError, match="aggregations: none \\(AGGREGATIONS is not set"):
        find_aggregation(None, "pages")
    pages = _SPEC.aggregations[0]
    assert find_aggregation_window(WINDOWS, pages, "tumbling_1m").name == "tumbling_1m"
    for name in ("hopping_1m", "x"):  # configured but not kept by pages, and not configured
        with pytest.raises(UnknownNameError, match=f"^aggregation 'pages' keeps no window '{name}'; its windows: "
                                                   "tumbling_1m$"):
            find_aggregation_window(WINDOWS, pages, name)


@pytest.mark.parametrize(("query", "key"), [
    ({"page_path": "/cart", "status": "200", "bot": "false"}, ("/cart", 200, False)),
    ({"page_path": "", "status": "-9223372036854775808", "bot": "true"}, (None, -2**63, True)),
    ({"page_path": "ü" * 256, "status": "", "bot": ""}, ("ü" * 256, None, None)),
])
def test_parse_key_takes_each_part_by_its_column_and_type(query: dict[str, str], key: tuple[object, ...]) -> None:
    assert parse_key({**query, "limit": "3"}, _SPEC.aggregations[0]) == key


@pytest.mark.parametrize(("aggregation", "query", "message"), [
    (0, {"status": "1", "bot": "true"}, "page_path is required: the key of aggregation 'pages' is page_path, "
                                        "status, bot"),
    (0, {"page_path": "/", "status": "2xx", "bot": "true"}, "status must be an integer, got '2xx'"),
    (0, {"page_path": "/", "status": str(2**63), "bot": "true"}, "status is an integer beyond 64 bits"),
    (0, {"page_path": "/", "status": "1", "bot": "yes"}, "bot must be true or false, got 'yes'"),
    (0, {"page_path": "x" * 257, "status": "1", "bot": "true"}, "page_path is longer than 256 characters"),
    (1, {"uid": ""}, "uid is empty: aggregation 'users' has no null key parts"),
])
def test_parse_key_refuses(aggregation: int, query: dict[str, str], message: str) -> None:
    with pytest.raises(BadParameterError) as caught:
        parse_key(query, _SPEC.aggregations[aggregation])
    assert str(caught.value) == message


def test_a_key_filter_takes_the_parts_given() -> None:
    pages = _SPEC.aggregations[0]
    assert parse_key_filter({"limit": "3"}, pages) == {}
    assert parse_key_filter({"bot": "false", "page_path": "/a"}, pages) == {"page_path": "/a", "bot": False}
    assert list(parse_key_filter({"bot": "true", "status": "-1"}, pages)) == ["status", "bot"]  # the key's order
    with pytest.raises(BadParameterError, match="^status must be an integer, got 'x'$"):
        parse_key_filter({"status": "x"}, pages)


def test_an_aggregation_as_the_api_lists_it() -> None:
    assert aggregation_to_api(_SPEC.aggregations[1]) == {
        "name": "users", "key": [{"field": "uid", "column": "uid", "type": "string"}], "missing_key": "dead_letter",
        "measures": [{"field": "ms", "column": "ms"}], "missing_measure": "dead_letter",
        "where": [{"field": "country", "values": ["DE", "FR"]}],
        "distinct": [{"field": "session", "column": "session", "type": "int"}],
        "windows": ["tumbling_1m", "hopping_1m"], "redis": "off"}
    assert aggregation_to_api(_SPEC.aggregations[0])["key"][0] == {"field": "page.path", "column": "page_path",
                                                                    "type": "string"}
