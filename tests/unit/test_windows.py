from __future__ import annotations

import dataclasses

import pytest

from tables.windows import (
    DEFAULT_WINDOWS,
    WindowSpec,
    is_window_closed,
    parse_duration_ms,
    parse_windows,
    window_end_ms,
    window_starts,
)


def _brute_force_starts(spec: WindowSpec, event_ms: int) -> tuple[int, ...]:
    # Independent definition: scan every aligned start that could contain the event.
    lo = event_ms - spec.size_ms - spec.step_ms
    hi = event_ms + spec.step_ms
    first = lo - (lo % spec.step_ms)  # Python % is non-negative for positive step
    return tuple(start for start in range(first, hi + 1, spec.step_ms) if start <= event_ms < start + spec.size_ms)


@pytest.mark.parametrize(
    ("size_ms", "step_ms"),
    [(1, 1), (2, 1), (6, 2), (6, 3), (6, 6), (60_000, 30_000), (60_000, 60_000), (10, 5)],
)
def test_window_starts_match_brute_force_including_negative_times(size_ms: int, step_ms: int) -> None:
    spec = WindowSpec("w", size_ms, step_ms)
    span = 3 * size_ms
    # Every ms for small windows; for large ones a stride plus both sides of
    # every step boundary, where off-by-one errors live.
    stride = max(1, size_ms // 500)
    events = set(range(-span, span + 1, stride)) | {10**15, -(10**15) - 7}
    for boundary in range(-span, span + 1, step_ms):
        events |= {boundary - 1, boundary, boundary + 1}
    for event_ms in sorted(events):
        expected = _brute_force_starts(spec, event_ms)
        assert window_starts(spec, event_ms) == expected, event_ms
        assert len(expected) == size_ms // step_ms


def test_window_starts_examples_at_boundaries() -> None:
    tumbling = WindowSpec("tumbling_1m", 60_000, 60_000)
    hopping = WindowSpec("hopping_1m", 60_000, 30_000)
    assert window_starts(tumbling, 0) == (0,)
    assert window_starts(tumbling, 59_999) == (0,)
    assert window_starts(tumbling, 60_000) == (60_000,)
    assert window_starts(tumbling, -1) == (-60_000,)
    assert window_starts(hopping, 0) == (-30_000, 0)
    assert window_starts(hopping, 29_999) == (-30_000, 0)
    assert window_starts(hopping, 30_000) == (0, 30_000)
    assert window_starts(hopping, -30_001) == (-90_000, -60_000)


def test_window_end_and_closed() -> None:
    spec = WindowSpec("hopping_1m", 60_000, 30_000)
    assert window_end_ms(spec, 30_000) == 90_000
    assert window_end_ms(spec, -60_000) == 0
    assert not is_window_closed(spec, 30_000, 89_999)
    assert is_window_closed(spec, 30_000, 90_000)
    assert is_window_closed(spec, 30_000, 10**12)
    with pytest.raises(ValueError, match="not aligned"):
        window_end_ms(spec, 15_000)


def test_window_spec_properties_and_immutability() -> None:
    spec = WindowSpec("tumbling_1m", 60_000, 60_000)
    assert spec.is_tumbling
    assert not WindowSpec("h", 60_000, 30_000).is_tumbling
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
