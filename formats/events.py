"""The input event (EVENT_FORMAT 1): decoding and validation of one raw record (bytes -> Event | Rejection).

A JSON object with ``user_id`` and ``event_type`` (strings of 1 to 256 characters, no control
characters), ``timestamp`` (epoch milliseconds, or ISO-8601 with or without a zone: none means UTC)
and ``value`` (a finite number); other fields are ignored. A record that is not one goes to the
dead-letter topic with one of REJECTION_REASONS.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Final, NamedTuple

import msgspec
import orjson

__all__ = [
    "BAD_STRING",
    "EVENT_FORMAT",
    "BAD_TIMESTAMP",
    "INVALID_JSON",
    "MAX_STRING_CHARS",
    "MISSING_FIELD",
    "NON_FINITE_VALUE",
    "NOT_AN_OBJECT",
    "OVERSIZED",
    "REJECTION_REASONS",
    "TIMESTAMP_OUT_OF_RANGE",
    "WRONG_TYPE",
    "Event",
    "EventColumns",
    "EventFields",
    "Rejection",
    "check_number",
    "check_string",
    "decode_common",
    "decode_event",
    "encode_event",
    "forbidden_char",
    "json_object",
    "iso_to_epoch_ms",
    "reject",
    "type_name",
]

EVENT_FORMAT: Final = 1
INVALID_JSON: Final = "invalid_json"
NOT_AN_OBJECT: Final = "not_an_object"
MISSING_FIELD: Final = "missing_field"
WRONG_TYPE: Final = "wrong_type"
NON_FINITE_VALUE: Final = "non_finite_value"
BAD_TIMESTAMP: Final = "bad_timestamp"
TIMESTAMP_OUT_OF_RANGE: Final = "timestamp_out_of_range"
OVERSIZED: Final = "oversized"
BAD_STRING: Final = "bad_string"
REJECTION_REASONS: Final = frozenset(
    {
        INVALID_JSON,
        NOT_AN_OBJECT,
        MISSING_FIELD,
        WRONG_TYPE,
        NON_FINITE_VALUE,
        BAD_TIMESTAMP,
        TIMESTAMP_OUT_OF_RANGE,
        OVERSIZED,
        BAD_STRING,
    }
)

# Bounds the encoded size of keys/paths built from these strings (see keys.py).
MAX_STRING_CHARS: Final = 256
# ISO-8601 timestamps are short; anything longer is garbage, not a timestamp.
_MAX_TIMESTAMP_CHARS: Final = 64
_MAX_DETAIL_CHARS: Final = 160
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Cc: control characters (break logs, headers, keys); Cs: lone surrogates
# (cannot be encoded as UTF-8 at all).
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs"})
# Exactly the code points of those categories: Cc is U+0000-U+001F and U+007F-U+009F,
# Cs the surrogates (test_events checks the equivalence over all of Unicode).
_FORBIDDEN_CHARS: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
forbidden_char: Final = _FORBIDDEN_CHARS.search  # the first character a string field may not have, or None


class Event(NamedTuple):
    """A valid event (a NamedTuple: the hot path builds one per record, and a tuple is the cheapest)."""

    user_id: str
    event_type: str
    event_ms: int
    value: float


class EventColumns:
    """Valid events of one partition in offset order, column by column (the raw archive's rows).

    The hot path appends to the lists; the Parquet writer takes them as they are. As a
    Sequence it reads as the (partition, offset, Event) records the lake's writer also takes.
    """

    __slots__ = ("event_ms", "event_types", "offsets", "partition", "user_ids", "values")

    def __init__(self, partition: int, offsets: list[int] | None = None, user_ids: list[str] | None = None,
                 event_types: list[str] | None = None, event_ms: list[int] | None = None,
                 values: list[float] | None = None) -> None:
        self.partition = partition
        self.offsets: list[int] = offsets if offsets is not None else []
        self.user_ids: list[str] = user_ids if user_ids is not None else []
        self.event_types: list[str] = event_types if event_types is not None else []
        self.event_ms: list[int] = event_ms if event_ms is not None else []
        self.values: list[float] = values if values is not None else []

    def append(self, offset: int, event: Event) -> None:
        self.offsets.append(offset)
        self.user_ids.append(event.user_id)
        self.event_types.append(event.event_type)
        self.event_ms.append(event.event_ms)
        self.values.append(event.value)

    def extend(self, other: EventColumns, start: int = 0, stop: int | None = None) -> None:
        """Append other's rows [start, stop)."""
        self.offsets += other.offsets[start:stop]
        self.user_ids += other.user_ids[start:stop]
        self.event_types += other.event_types[start:stop]
        self.event_ms += other.event_ms[start:stop]
        self.values += other.values[start:stop]

    def tail(self, start: int) -> EventColumns:
        """Rows [start, end) as new columns."""
        return EventColumns(self.partition, self.offsets[start:], self.user_ids[start:], self.event_types[start:],
                            self.event_ms[start:], self.values[start:])

    def event(self, index: int) -> Event:
        return Event(self.user_ids[index], self.event_types[index], self.event_ms[index], self.values[index])

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> tuple[int, int, Event]:
        return self.partition, self.offsets[index], self.event(index)

    def __iter__(self) -> Iterator[tuple[int, int, Event]]:
        for index in range(len(self.offsets)):
            yield self[index]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record was dropped; ``reason`` is one of REJECTION_REASONS."""

    reason: str
    detail: str


def reject(reason: str, detail: str) -> Rejection:
    """A Rejection whose detail is made safe for logs and headers (one line of ASCII, bounded)."""
    # Details end up in logs/metrics: keep them short and single-line ASCII.
    text = detail.encode("ascii", "backslashreplace").decode("ascii")
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    if len(text) > _MAX_DETAIL_CHARS:
        text = text[: _MAX_DETAIL_CHARS - 3] + "..."
    return Rejection(reason=reason, detail=text)


def type_name(value: object) -> str:
    return type(value).__name__


def _snippet(text: str) -> str:
    return ascii(text[:32]) + ("..." if len(text) > 32 else "")


def _check_string(obj: dict[str, object], field: str) -> str | Rejection:
    return check_string(obj[field], field)


def check_string(value: object, field: str) -> str | Rejection:
    """A string field's value, or why it is not a valid one: 1 to MAX_STRING_CHARS code points, no
    control character and no lone surrogate (it becomes part of S3 paths and Redis keys)."""
    if not isinstance(value, str):
        return reject(WRONG_TYPE, f"{field} must be a string, got {type_name(value)}")
    if not value:
        return reject(BAD_STRING, f"{field} is empty")
    if len(value) > MAX_STRING_CHARS:
        return reject(BAD_STRING, f"{field} has {len(value)} characters, max {MAX_STRING_CHARS}")
    forbidden = _FORBIDDEN_CHARS.search(value)  # one C-level scan: this runs twice per event
    if forbidden is not None:
        index = forbidden.start()
        return reject(BAD_STRING, f"{field} has forbidden character U+{ord(value[index]):04X} at index {index}")
    return value


def _check_value(value: object) -> float | Rejection:
    return check_number(value, "value")


def check_number(value: object, field: str) -> float | Rejection:
    """A numeric field's value as a float, or why it is not a valid one (a bool is not a number)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return reject(WRONG_TYPE, f"{field} must be a number, got {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:
        return reject(NON_FINITE_VALUE, f"{field} overflows a float")
    if not math.isfinite(number):
        return reject(NON_FINITE_VALUE, f"{field} is {number}")
    return number


def iso_to_epoch_ms(text: str) -> int | None:
    """Exact floor of the instant in epoch ms; None if not ISO-8601."""
    if len(text) > _MAX_TIMESTAMP_CHARS or not text.isascii():
        return None
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)  # contract: no zone means UTC
        delta = parsed - _EPOCH
    except (ValueError, OverflowError):
        return None
    # timedelta keeps seconds and microseconds non-negative, so integer floor
    # division is the true floor even before the epoch; no float involved.
    return (delta.days * 86_400 + delta.seconds) * 1_000 + delta.microseconds // 1_000


# Cached: every row of a closed window formats the same start and end (formats/aggregates.py's JSON, a Redis
# member per row), and strftime was 12% of the worker at 100,000 keys (NOTES.md, Cost per event).
@functools.lru_cache(maxsize=4096, typed=True)
def iso_utc(epoch_ms: int) -> str:
    """`2026-11-26T03:00:00Z`, with milliseconds only when there are some."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, timezone.utc)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    millis = epoch_ms % 1000
    return f"{text}.{millis:03d}Z" if millis else f"{text}Z"


def _check_timestamp(value: object) -> int | Rejection:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        # Floats are rejected: ms precision is ambiguous and orjson turns
        # integers beyond 64 bits into floats.
        return reject(WRONG_TYPE, f"timestamp must be epoch ms int or ISO-8601 string, got {type_name(value)}")
    if isinstance(value, int):
        return value
    event_ms = iso_to_epoch_ms(value)
    if event_ms is None:
        return reject(BAD_TIMESTAMP, f"timestamp is not ISO-8601: {_snippet(value)}")
    return event_ms


_BoundedStr = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STRING_CHARS)]


class EventFields(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """The common record exactly: these four fields and no other, as msgspec decodes them.

    No unknown field, so nothing of the record goes unparsed (orjson rejects a bad escape or
    a NaN anywhere in the document, and so must whatever accepts it). msgspec's typing is
    strict: a bool is neither an int nor a float, a float is not an int, and the length
    bounds count code points, as len() does.
    """

    user_id: _BoundedStr
    event_type: _BoundedStr
    timestamp: int
    value: int | float  # msgspec keeps integers beyond 64 bits exact; orjson makes them floats


_decode_fields: Final = msgspec.json.Decoder(EventFields).decode
_FIELDS_ERRORS: Final = (msgspec.DecodeError, UnicodeDecodeError)


def decode_common(raw: bytes, max_bytes: int, min_event_ms: int, max_event_ms: int) -> EventFields | None:
    """The fast path: the fields of a common valid record (value made a float), or None.

    None says nothing about validity: decode_event then decides, and has every rejection. What
    this accepts, decode_event accepts with the same values (tests/unit/test_events.py); the
    hot path (tables/partials.fold_records) uses the fields without building an Event.
    """
    if len(raw) > max_bytes:
        return None
    try:
        fields = _decode_fields(raw)
    except _FIELDS_ERRORS:
        return None
    user_id, event_type, value = fields.user_id, fields.event_type, fields.value
    # For ASCII, isprintable() is exactly "no code point below U+0020 and not U+007F".
    if not (user_id.isascii() and user_id.isprintable() and event_type.isascii() and event_type.isprintable()
            and min_event_ms <= fields.timestamp <= max_event_ms):
        return None
    if type(value) is float:
        if not math.isfinite(value):  # msgspec rejects inf and nan itself; this keeps the rule here
            return None
    elif -_EXACT_INT < value < _EXACT_INT:
        fields.value = float(value)
    else:
        return None  # an int a float cannot hold exactly: the full checks decide
    return fields


def json_object(raw: bytes, max_bytes: int) -> dict[str, Any] | None:
    """The record's top-level JSON object, for a fast path; None if it is oversized, not JSON or not an
    object (the full checks then say which)."""
    if len(raw) > max_bytes:
        return None
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return obj if type(obj) is dict else None


_new_event: Final = tuple.__new__  # Event(...) runs a Python-level __new__; this skips it


def decode_event(raw: bytes, *, max_bytes: int, min_event_ms: int, max_event_ms: int) -> Event | Rejection:
    """Decode one record; unknown fields are ignored.

    ``[min_event_ms, max_event_ms]`` is the inclusive accepted event-time range,
    chosen by the caller (e.g. year 2000 .. now + 1 day).

    The common record (ASCII strings, a float or int value, an epoch-ms timestamp) takes a fast
    path that accepts exactly what the full checks below accept; anything else, and every
    rejection, goes through them, so the reasons have one home. In front of it, decode_common
    takes the record that has exactly the four fields.
    """
    fields = decode_common(raw, max_bytes, min_event_ms, max_event_ms)
    if fields is not None:
        return _new_event(Event, (fields.user_id, fields.event_type, fields.timestamp, fields.value))
    obj = json_object(raw, max_bytes)
    if obj is not None:
        user_id, event_type = obj.get("user_id"), obj.get("event_type")
        value, event_ms = obj.get("value"), obj.get("timestamp")
        if (type(user_id) is str and type(event_type) is str and type(event_ms) is int
                and (type(value) is float or type(value) is int)
                and 0 < len(user_id) <= MAX_STRING_CHARS and 0 < len(event_type) <= MAX_STRING_CHARS
                # For ASCII, isprintable() is exactly "no code point below U+0020 and not U+007F".
                and user_id.isascii() and user_id.isprintable()
                and event_type.isascii() and event_type.isprintable()
                and min_event_ms <= event_ms <= max_event_ms):
            number = float(value) if type(value) is int and -_EXACT_INT < value < _EXACT_INT else value
            if type(number) is float and math.isfinite(number):
                return Event(user_id, event_type, event_ms, number)
    return _decode_checked(raw, max_bytes=max_bytes, min_event_ms=min_event_ms, max_event_ms=max_event_ms)


# Ints the fast path turns into floats; beyond this the full checks decide (overflow, precision).
_EXACT_INT: Final = 2**53


def _decode_checked(raw: bytes, *, max_bytes: int, min_event_ms: int, max_event_ms: int) -> Event | Rejection:
    """The full checks, in the order that decides which reason a bad record gets."""
    if len(raw) > max_bytes:
        # Checked before parsing so hostile payloads cost nothing to reject.
        return reject(OVERSIZED, f"record is {len(raw)} bytes, max {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return reject(INVALID_JSON, str(exc))
    if not isinstance(obj, dict):
        return reject(NOT_AN_OBJECT, f"top-level JSON is {type_name(obj)}")
    for field in ("user_id", "event_type", "timestamp", "value"):
        if field not in obj:
            return reject(MISSING_FIELD, f"{field} is missing")

    user_id = _check_string(obj, "user_id")
    if isinstance(user_id, Rejection):
        return user_id
    event_type = _check_string(obj, "event_type")
    if isinstance(event_type, Rejection):
        return event_type
    value = _check_value(obj["value"])
    if isinstance(value, Rejection):
        return value
    event_ms = _check_timestamp(obj["timestamp"])
    if isinstance(event_ms, Rejection):
        return event_ms
    if not min_event_ms <= event_ms <= max_event_ms:
        return reject(
            TIMESTAMP_OUT_OF_RANGE,
            f"timestamp {event_ms} ms outside [{min_event_ms}, {max_event_ms}]",
        )
    return Event(user_id=user_id, event_type=event_type, event_ms=event_ms, value=value)


def encode_event(event: Event) -> bytes:
    """Canonical JSON (sorted keys, epoch-ms timestamp) that decode_event accepts."""
    if not math.isfinite(event.value):
        raise ValueError(f"cannot encode non-finite value {event.value!r}")
    return orjson.dumps(
        {
            "event_type": event.event_type,
            "timestamp": event.event_ms,
            "user_id": event.user_id,
            "value": float(event.value),
        },
        option=orjson.OPT_SORT_KEYS,
    )
