from __future__ import annotations

import dataclasses

import pytest

from tables.windows import (
    DEFAULT_WINDOWS,
    WindowSpec,
    closed_upto_ms,
    is_closed,
    parse_duration_ms,
    parse_windows,
    window_sizes,
)


def test_a_window_closes_once_the_frontier_reaches_its_end() -> None:
    assert not is_closed(30_000, 60_000, 89_999)
    assert is_closed(30_000, 60_000, 90_000)
    assert is_closed(30_000, 60_000, 10**12)
    assert is_closed(-60_000, 60_000, 0)
    assert not is_closed(30_000, 60_000, None)  # no frontier yet: nothing is closed
    assert closed_upto_ms(60_000, 90_000) == 30_000
    assert window_sizes(parse_windows("a:1m,b:2m:1m")) == {"a": 60_000, "b": 120_000}


def test_window_spec_is_immutable() -> None:
    spec = WindowSpec("tumbling_1m", 60_000, 60_000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.size_ms = 1  # type: ignore[misc]
    assert not hasattr(spec, "__dict__")


@pytest.mark.parametrize(
    ("name", "size_ms", "step_ms", "message"),
    [
        ("", 1, 1, "invalid window name"),
        ("Upper", 1, 1, "invalid window name"),
        ("_lead", 1, 1, "invalid window name"),
        ("-lead", 1, 1, "invalid window name"),
        ("a/b", 1, 1, "invalid window name"),
        ("a" * 64, 1, 1, "invalid window name"),
        ("ok", 0, 1, "size_ms"),
        ("ok", -60, 1, "size_ms"),
        ("ok", True, 1, "size_ms"),
        ("ok", 60, 0, "step_ms"),
        ("ok", 60, 61, "step_ms"),
        ("ok", 60, -1, "step_ms"),
        ("ok", 60, 25, "not a multiple"),
    ],
)
def test_window_spec_validation(name: str, size_ms: int, step_ms: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WindowSpec(name, size_ms, step_ms)


def test_window_spec_accepts_longest_name() -> None:
    assert WindowSpec("a" * 63, 1, 1).name == "a" * 63
    assert WindowSpec("0-_x", 1, 1).name == "0-_x"


@pytest.mark.parametrize(
    ("text", "expected_ms"),
    [
        ("500ms", 500),
        ("60s", 60_000),
        ("1m", 60_000),
        ("2h", 7_200_000),
        ("60", 60_000),
        ("0", 0),
        ("0ms", 0),
        (" 30s ", 30_000),
        ("999999999999999ms", 999_999_999_999_999),
    ],
)
def test_parse_duration_ms(text: str, expected_ms: int) -> None:
    assert parse_duration_ms(text) == expected_ms


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("-5s", "negative"),
        ("-1", "negative"),
        ("abc", "expected an integer"),
        ("1.5s", "expected an integer"),
        ("5d", "expected an integer"),
        ("5 s", "expected an integer"),
        ("5S", "expected an integer"),
        ("s", "expected an integer"),
        ("\u0665s", "expected an integer"),  # Arabic-Indic digit five
        ("1000000000000000", "expected an integer"),  # 16 digits
    ],
)
def test_parse_duration_ms_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration_ms(text)


def test_parse_default_windows() -> None:
    assert parse_windows(DEFAULT_WINDOWS) == (
        WindowSpec("tumbling_1m", 60_000, 60_000),
        WindowSpec("hopping_1m", 60_000, 30_000),
    )


def test_parse_windows_mixed_units_and_whitespace() -> None:
    assert parse_windows(" a:500ms , b:2h:30m,c:10 ") == (
        WindowSpec("a", 500, 500),
        WindowSpec("b", 7_200_000, 1_800_000),
        WindowSpec("c", 10_000, 10_000),
    )


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty window list"),
        ("  ", "empty window list"),
        ("a:60s,", "empty item"),
        ("a:60s,,b:60s", "empty item"),
        ("a:60s,a:30s", "'a:30s'.*duplicate name"),
        ("a:60s,hourly:1h", "'hourly:1h'.*reserved for the batch layer"),
        ("daily:24h", "'daily:24h'.*reserved"),
        ("a", "'a'.*name:size"),
        ("a:1s:1s:1s", "'a:1s:1s:1s'"),
        ("a:1s,b:xyz", "'b:xyz'.*invalid duration"),
        ("Bad:60s", "'Bad:60s'.*invalid window name"),
        ("a:60s:45s", "'a:60s:45s'.*not a multiple"),
        ("a:0s", "'a:0s'.*size_ms"),
        ("a:30s:60s", "'a:30s:60s'.*step_ms"),
    ],
)
def test_parse_windows_rejects_naming_the_item(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        parse_windows(text)
