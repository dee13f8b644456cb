from __future__ import annotations

import calendar
import dataclasses
import math
import random
import time
import types
from typing import Any

import orjson
import pytest

from formats.events import (
    BAD_STRING,
    BAD_TIMESTAMP,
    INVALID_JSON,
    MISSING_FIELD,
    NON_FINITE_VALUE,
    NOT_AN_OBJECT,
    OVERSIZED,
    REJECTION_REASONS,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    Event,
    Rejection,
    decode_event,
    encode_event,
)

MIN_MS = 946_684_800_000  # 2000-01-01T00:00:00Z
MAX_MS = 1_900_000_000_000
T_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, computed independently below


def _decode(raw: bytes, max_bytes: int = 4_096) -> Event | Rejection:
    return decode_event(raw, max_bytes=max_bytes, min_event_ms=MIN_MS, max_event_ms=MAX_MS)


def _record(**overrides: Any) -> bytes:
    record: dict[str, Any] = {
        "user_id": "u1",
        "event_type": "click",
        "timestamp": T_MS,
        "value": 1.5,
    }
    for key, value in overrides.items():
        if value is _DROP:
            record.pop(key)
        else:
            record[key] = value
    return orjson.dumps(record)


_DROP = object()


def _reason(result: Event | Rejection) -> str:
    assert isinstance(result, Rejection), result
    assert result.reason in REJECTION_REASONS
    assert 0 < len(result.detail) <= 160 and result.detail.isascii()
    assert "\n" not in result.detail
    return result.reason


def test_reference_timestamp_constant() -> None:
    assert calendar.timegm((2024, 1, 1, 0, 0, 0)) * 1000 == T_MS


def test_valid_event_with_unknown_fields_ignored() -> None:
    raw = _record(extra={"nested": [1, 2]}, other=None)
    assert _decode(raw) == Event(user_id="u1", event_type="click", event_ms=T_MS, value=1.5)


def test_int_value_becomes_float() -> None:
    event = _decode(_record(value=-7))
    assert isinstance(event, Event)
    assert event.value == -7.0 and isinstance(event.value, float)


def test_hostile_but_valid_strings_are_accepted() -> None:
    for text in ["a/b", "..", "../../etc/passwd", "k=v", "*?[]{}:", "😀" * 256, "é" * 256, " "]:
        event = _decode(_record(event_type=text, user_id=text))
        assert isinstance(event, Event), text
        assert event.event_type == text and event.user_id == text


@pytest.mark.parametrize(
    ("timestamp", "expected_ms"),
    [
        ("2024-01-01T00:00:00Z", T_MS),
        ("2024-01-01T00:00:00+00:00", T_MS),
        ("2024-01-01T00:00:00", T_MS),  # no zone means UTC
        ("2024-01-01", T_MS),
        ("2024-01-01T02:00:00+02:00", T_MS),
        ("2023-12-31T19:00:00-05:00", T_MS),
        ("2024-01-01T00:00:00.123456Z", T_MS + 123),  # microseconds floor to ms
        ("2024-01-01T00:00:00.999999+00:00", T_MS + 999),
        ("2024-01-01T00:00:00.5", T_MS + 500),
        ("2024-01-01T00:00:00.001", T_MS + 1),
        ("2024-01-01T05:30:00.000999+05:30", T_MS + 0),
        ("2024-01-01T00:00:00+00:00:30.5", T_MS - 30_500),  # offset with seconds
        ("20240101T000000Z", T_MS),
        ("2024-02-29T12:34:56.789Z", T_MS + (31 + 28) * 86_400_000 + 45_296_789),
        (T_MS, T_MS),
        (MIN_MS, MIN_MS),
        (MAX_MS, MAX_MS),
    ],
)
def test_timestamp_variants(timestamp: object, expected_ms: int) -> None:
    event = _decode(_record(timestamp=timestamp))
    assert isinstance(event, Event), event
    assert event.event_ms == expected_ms


def test_iso_conversion_is_exact_against_integer_reference() -> None:
    rng = random.Random(99)
    for _ in range(300):
        seconds = rng.randrange(MIN_MS // 1000, MAX_MS // 1000)
        micros = rng.randrange(1_000_000)
        tm = time.gmtime(seconds)
        text = (
            f"{tm.tm_year:04d}-{tm.tm_mon:02d}-{tm.tm_mday:02d}T"
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d}.{micros:06d}Z"
        )
        event = _decode(_record(timestamp=text))
        assert isinstance(event, Event)
        assert event.event_ms == seconds * 1000 + micros // 1000, text


def test_pre_epoch_iso_floors_toward_negative_infinity() -> None:
    raw = _record(timestamp="1969-12-31T23:59:59.9995Z")
    result = decode_event(raw, max_bytes=4_096, min_event_ms=-(10**12), max_event_ms=MAX_MS)
    assert isinstance(result, Event)
    assert result.event_ms == -1  # -0.5 ms floors to -1, not 0


def test_oversized_checked_before_parsing() -> None:
    raw = b"{" * 101  # not JSON either: size must win
    assert _reason(_decode(raw, max_bytes=100)) == OVERSIZED
    exact = _record()
    assert isinstance(_decode(exact, max_bytes=len(exact)), Event)
    assert _reason(_decode(exact, max_bytes=len(exact) - 1)) == OVERSIZED


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"not json", b'{"a":NaN}', b'{"value": Infinity}', b"\xff\xfe", b'{"v": 1e400}', b'"\\ud800"'],
)
def test_invalid_json(raw: bytes) -> None:
    assert _reason(_decode(raw)) == INVALID_JSON


@pytest.mark.parametrize("raw", [b"[]", b"[1, 2]", b'"text"', b"1", b"null", b"true"])
def test_not_an_object(raw: bytes) -> None:
    assert _reason(_decode(raw)) == NOT_AN_OBJECT


@pytest.mark.parametrize("field", ["user_id", "event_type", "timestamp", "value"])
def test_missing_field(field: str) -> None:
    result = _decode(_record(**{field: _DROP}))
    assert _reason(result) == MISSING_FIELD
    assert isinstance(result, Rejection) and field in result.detail


@pytest.mark.parametrize(
    "overrides",
    [
        {"user_id": 5},
        {"user_id": None},
        {"event_type": ["click"]},
        {"event_type": {"a": 1}},
        {"value": "1.5"},
        {"value": None},
        {"value": True},
        {"value": [1]},
        {"timestamp": 1_704_067_200_000.0},
        {"timestamp": True},
        {"timestamp": None},
        {"timestamp": {"ms": 1}},
    ],
)
def test_wrong_type(overrides: dict[str, Any]) -> None:
    assert _reason(_decode(_record(**overrides))) == WRONG_TYPE


def test_timestamp_beyond_64_bits_is_wrong_type() -> None:
    # orjson parses integers beyond 64 bits as floats.
    raw = b'{"user_id":"u","event_type":"e","value":1,"timestamp":18446744073709551616}'
    assert _reason(_decode(raw)) == WRONG_TYPE


@pytest.mark.parametrize("text", ["", "a\x00b", "line\nbreak", "tab\there", "\x7f", "\x85nel", "x" * 257, "😀" * 257])
def test_bad_string(text: str) -> None:
    assert _reason(_decode(_record(event_type=text))) == BAD_STRING
    assert _reason(_decode(_record(user_id=text))) == BAD_STRING


def test_bad_string_detail_does_not_echo_input() -> None:
    result = _decode(_record(user_id="\x1b[31m" + "A" * 200))
    assert _reason(result) == BAD_STRING
    assert isinstance(result, Rejection) and "AAAA" not in result.detail


def test_max_length_string_is_accepted() -> None:
    assert isinstance(_decode(_record(user_id="x" * 256)), Event)


def test_non_finite_value_from_parser_output(monkeypatch: pytest.MonkeyPatch) -> None:
    # orjson itself rejects 1e400/NaN (invalid_json), so feed the decoder the
    # values a more permissive parser could produce.
    from formats import events

    for value in (10**400, float("inf"), float("-inf"), float("nan")):
        parsed = {"user_id": "u", "event_type": "e", "timestamp": T_MS, "value": value}
        stub = types.SimpleNamespace(loads=lambda raw, parsed=parsed: parsed, JSONDecodeError=orjson.JSONDecodeError)
        monkeypatch.setattr(events, "orjson", stub)
        assert _reason(_decode(b"{}")) == NON_FINITE_VALUE


@pytest.mark.parametrize(
    "timestamp",
    [
        "yesterday",
        "1704067200000",
        "2024-13-01T00:00:00Z",
        "2024-01-01T25:00:00Z",
        " 2024-01-01",
        "2024-01-01T00:00:00Z" + " " * 60,
        "\u0662\u0660\u0662\u0664-01-01",
        "",
    ],
)
def test_bad_timestamp(timestamp: str) -> None:
    assert _reason(_decode(_record(timestamp=timestamp))) == BAD_TIMESTAMP


@pytest.mark.parametrize(
    "timestamp",
    [
        MIN_MS - 1,
        MAX_MS + 1,
        0,
        -1,
        2**63 - 1,
        -(2**63),
        "1999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+05:00",
    ],
)
def test_timestamp_out_of_range(timestamp: object) -> None:
    assert _reason(_decode(_record(timestamp=timestamp))) == TIMESTAMP_OUT_OF_RANGE


def test_every_rejection_reason_is_covered() -> None:
    samples = {
        INVALID_JSON: b"{",
        NOT_AN_OBJECT: b"[]",
        MISSING_FIELD: _record(value=_DROP),
        WRONG_TYPE: _record(value="x"),
        BAD_TIMESTAMP: _record(timestamp="nope"),
        TIMESTAMP_OUT_OF_RANGE: _record(timestamp=0),
        OVERSIZED: b" " * 5_000,
        BAD_STRING: _record(user_id=""),
    }
    seen = {_reason(_decode(raw)) for raw in samples.values()}
    seen.add(NON_FINITE_VALUE)  # covered by test_non_finite_value_from_parser_output
    assert seen == REJECTION_REASONS
    for reason, raw in samples.items():
        assert _reason(_decode(raw)) == reason


def test_encode_event_is_canonical_and_round_trips() -> None:
    event = Event(user_id="ü/..=", event_type="a\u2028b", event_ms=T_MS + 7, value=0.1)
    raw = encode_event(event)
    assert raw == (b'{"event_type":"a\xe2\x80\xa8b","timestamp":1704067200007,"user_id":"\xc3\xbc/..=","value":0.1}')
    assert _decode(raw) == event


def test_encode_decode_round_trip_random() -> None:
    rng = random.Random(5)
    alphabet = "az/.=:%😀é\u200b "
    for _ in range(200):
        event = Event(
            user_id="".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))),
            event_type="".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20))),
            event_ms=rng.randint(MIN_MS, MAX_MS),
            value=rng.uniform(-1e12, 1e12),
        )
        assert _decode(encode_event(event)) == event


def test_encode_rejects_non_finite_value() -> None:
    with pytest.raises(ValueError):
        encode_event(Event("u", "e", T_MS, float("nan")))


def test_event_and_rejection_are_frozen() -> None:
    event = Event("u", "e", 1, 1.0)
    with pytest.raises(AttributeError):
        event.value = 2.0  # type: ignore[misc]
    rejection = Rejection(reason=BAD_STRING, detail="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rejection.reason = "y"  # type: ignore[misc]


def test_forbidden_character_pattern_is_exactly_the_forbidden_categories() -> None:
    import sys
    import unicodedata

    from formats.events import _FORBIDDEN_CATEGORIES, _FORBIDDEN_CHARS

    for code_point in range(sys.maxunicode + 1):
        char = chr(code_point)
        expected = unicodedata.category(char) in _FORBIDDEN_CATEGORIES
        assert (_FORBIDDEN_CHARS.match(char) is not None) == expected, hex(code_point)


def test_the_fast_path_accepts_exactly_what_the_full_checks_accept() -> None:
    """decode_event's fast path for common records against _decode_checked, on records made to sit
    on every boundary the two must agree on."""
    import random

    from formats.events import _decode_checked

    rng = random.Random(8)
    strings = ["u", "click", "x" * 256, "x" * 257, "", "a\x7fb", "a\x1fb", "tab\t", "ü", "\u2028", "a b", "~"]
    values = [1.5, 0, -3, 2**53 - 1, 2**53, -(2**53), 10**400, True, None, "1", float("inf")]
    stamps = [T_MS, T_MS - 1, 0, True, "2026-01-01T00:00:00Z", 1.5, -1]
    for _ in range(4_000):
        body: dict[str, object] = {}
        for field, choices in (("user_id", strings), ("event_type", strings), ("value", values),
                               ("timestamp", stamps)):
            if rng.random() < 0.95:
                body[field] = rng.choice(choices)
        try:
            raw = orjson.dumps(body)
        except TypeError:
            continue  # 10**400 cannot be encoded by orjson: written by hand below
        for candidate in (raw, raw.replace(b"1.5", b"1e999")):
            limits = {"max_bytes": rng.choice((len(candidate), len(candidate) - 1, 4096)),
                      "min_event_ms": 0, "max_event_ms": T_MS}
            assert decode_event(candidate, **limits) == _decode_checked(candidate, **limits), candidate


def test_decode_common_accepts_only_what_the_full_checks_accept_with_the_same_values() -> None:
    """msgspec's fast path (decode_common) against _decode_checked, on the documents where the
    two parsers could disagree: big integers, duplicate keys, escapes, literals orjson refuses,
    unknown fields, and numbers written in every JSON form."""
    from formats.events import _decode_checked, decode_common

    limits = {"max_bytes": 4_096, "min_event_ms": 0, "max_event_ms": 2**63}
    head = b'{"user_id":"u","event_type":"e",'
    documents = [
        head + b'"timestamp":18446744073709551615,"value":1}',
        head + b'"timestamp":18446744073709551616,"value":1}',
        head + b'"timestamp":5.0,"value":1}', head + b'"timestamp":1e3,"value":1}',
        head + b'"timestamp":true,"value":1}', head + b'"timestamp":5,"value":true}',
        head + b'"timestamp":5,"value":18446744073709551616}', head + b'"timestamp":5,"value":-9007199254740993}',
        head + b'"timestamp":5,"value":9007199254740991}', head + b'"timestamp":5,"value":-0}',
        head + b'"timestamp":5,"value":-0.0}', head + b'"timestamp":5,"value":4.9e-325}',
        head + b'"timestamp":5,"value":1.7976931348623157e308}', head + b'"timestamp":5,"value":1.8e308}',
        head + b'"timestamp":5,"value":NaN}', head + b'"timestamp":5,"value":Infinity}',
        head + b'"timestamp":5,"value":1e999}', head + b'"timestamp":5,"value":1.}',
        head + b'"timestamp":5,"value":+1}', head + b'"timestamp":05,"value":1}',
        head + b'"timestamp":5,"value":1,"value":"x"}', head + b'"timestamp":5,"value":"x","value":2}',
        b'{"user_id":"a","user_id":"b","event_type":"e","timestamp":5,"value":1}',
        head + b'"timestamp":5,"value":1,"extra":"\\ud800"}', head + b'"timestamp":5,"value":1,"extra":NaN}',
        head + b'"timestamp":5,"value":1,"extra":"\xff"}', head + b'"timestamp":5,"value":1,"x":' + b"[" * 2000
        + b"]" * 2000 + b"}",
        b'{"user_\\u0069d":"u","event_type":"e","timestamp":5,"value":1}',
        b'{"user_id":"\\u0041","event_type":"\\u0000","timestamp":5,"value":1}',
        b'{"user_id":"\\ud83d\\ude00","event_type":"e","timestamp":5,"value":1}',
        b'{"user_id":"a\tb","event_type":"e","timestamp":5,"value":1}',
        b'{"user_id":"\xc3\xa9","event_type":"e","timestamp":5,"value":1}',
        b'\xef\xbb\xbf' + head + b'"timestamp":5,"value":1}', b" \n" + head + b'"timestamp":5,"value":1}\r\n\t',
        head + b'"timestamp":5,"value":1}\x00', head + b'"timestamp":5,"value":1,}',
        head + b'"timestamp":"2024-01-01T00:00:00Z","value":1}', b"[]", b"{}", b"",
    ]
    rng = random.Random(12)
    for _ in range(3_000):  # numbers in every written form: digits, fractions, exponents
        mantissa = str(rng.randrange(10 ** rng.randint(1, 25)))
        if rng.random() < 0.5:
            cut = rng.randint(1, len(mantissa))
            mantissa = mantissa[:cut] + "." + (mantissa[cut:] or "0")
        if rng.random() < 0.5:
            mantissa += rng.choice("eE") + rng.choice(["", "-", "+"]) + str(rng.randint(0, 330))
        sign = rng.choice(["", "-"])
        documents.append(head + b'"timestamp":5,"value":' + (sign + mantissa).encode() + b"}")
    for raw in documents:
        expected = _decode_checked(raw, **limits)
        fields = decode_common(raw, limits["max_bytes"], limits["min_event_ms"], limits["max_event_ms"])
        assert decode_event(raw, **limits) == expected, raw
        if fields is not None:
            assert isinstance(expected, Event), raw
            got = (fields.user_id, fields.event_type, fields.timestamp, fields.value)
            assert got == tuple(expected) and type(fields.value) is float, raw
            assert math.copysign(1.0, fields.value) == math.copysign(1.0, expected.value), raw
