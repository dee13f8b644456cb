"""Judging one event against a spec (aggregations/spec.py): its time, and for each aggregation whether
it counts, with which key and measures, or why it is a dead letter for that aggregation. Pure.

The event as a whole is a dead letter when it is oversized, not JSON, not an object, or when its time
is missing or bad: the time is declared once, for every aggregation. Otherwise each aggregation judges
it on its own, and what one rejects or leaves out still counts in the others:

1. ``where``: every condition's field must hold one of its values (types are strict: 1 is not true,
   "1" is not 1); an event that does not match is not counted, and is no dead letter.
2. the key parts, then the ``distinct`` fields, in order, each of its declared type: a string (1 to
   256 characters, no control character), an integer (64 bits) or a boolean. One missing or null
   follows ``missing_key``: a dead letter (missing_field), not counted (skip), or a null value (null).
3. the measures, in order: a finite number (a boolean is not one). A measure missing or null follows
   ``missing_measure``: a dead letter (missing_field), or left out of that measure's statistics (skip).

The reasons are formats/events.py's, with details naming the field path.

`SpecJudge` is the same judgement for one spec, quick in the common case (every field there, of its
type, valid): it decides that case itself, and hands every other event to these rules, so that the
rules stay the only home of what an event means (tests/unit/test_aggregations.py compares the two).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_FLOOR, Decimal
from math import isfinite
from typing import Any, Final, NamedTuple

import orjson

from aggregations.spec import Aggregation, FieldPath, KeyField, KeyValue, Spec, TimeField
from formats.events import (
    BAD_TIMESTAMP,
    INVALID_JSON,
    MAX_STRING_CHARS,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    OVERSIZED,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    Rejection,
    check_number,
    check_string,
    forbidden_char,
    iso_to_epoch_ms,
    json_object,
    reject,
    type_name,
)

__all__ = ["MISSING", "Counted", "Judgement", "SpecJudge", "event_time", "judge", "judge_object", "lookup"]

MISSING: Final = object()  # what lookup gives for a path the event does not have
_INT64: Final = 2**63
_MAX_TIME_TEXT: Final = 32  # an epoch in seconds as text: more is not a time

Key = tuple[KeyValue | None, ...]


class Counted(NamedTuple):
    """What one aggregation takes of an event: its key, each measure's value (None: left out), and the
    values of its ``distinct`` fields."""

    key: Key
    measures: tuple[float | None, ...]
    distinct: Key = ()


class Judgement(NamedTuple):
    event_ms: int
    results: tuple[Counted | Rejection | None, ...]  # per aggregation, in the spec's order; None: not counted


def lookup(event: Mapping[str, Any], path: FieldPath) -> Any:
    """The value at `path` in the event's nested objects, or MISSING."""
    value: Any = event
    for name in path.names:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(name, MISSING)
        if value is MISSING:
            return MISSING
    return value


def judge(raw: bytes, spec: Spec, *, max_bytes: int, min_event_ms: int, max_event_ms: int) -> Judgement | Rejection:
    """The judgement of a raw record, or why the whole record is a dead letter."""
    if len(raw) > max_bytes:
        return reject(OVERSIZED, f"record is {len(raw)} bytes, max {max_bytes}")
    try:
        event = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return reject(INVALID_JSON, str(exc))
    if not isinstance(event, dict):
        return reject(NOT_AN_OBJECT, f"top-level JSON is {type_name(event)}")
    return judge_object(event, spec, min_event_ms=min_event_ms, max_event_ms=max_event_ms)


def judge_object(event: Mapping[str, Any], spec: Spec, *, min_event_ms: int,
                 max_event_ms: int) -> Judgement | Rejection:
    """The judgement of a decoded event (a JSON object)."""
    event_ms = event_time(lookup(event, spec.time.path), spec.time)
    if isinstance(event_ms, Rejection):
        return event_ms
    if not min_event_ms <= event_ms <= max_event_ms:
        return reject(TIMESTAMP_OUT_OF_RANGE, f"{spec.time.path.text} {event_ms} ms outside [{min_event_ms}, "
                                              f"{max_event_ms}]")
    return Judgement(event_ms, tuple(_judge(event, aggregation) for aggregation in spec.aggregations))


def event_time(value: Any, time: TimeField) -> int | Rejection:
    """The event time in epoch milliseconds (floored) of the time field's value, or why it has none."""
    field, time_format = time.path.text, time.format
    if value is MISSING or value is None:
        return reject(MISSING_FIELD, f"{field} is {'missing' if value is MISSING else 'null'}")
    if isinstance(value, bool):
        return reject(WRONG_TYPE, f"{field} must be a time ({time_format}), got bool")
    if isinstance(value, str) and time_format in ("iso8601", "epoch_ms_or_iso8601"):
        event_ms = iso_to_epoch_ms(value)
        if event_ms is None:
            return reject(BAD_TIMESTAMP, f"{field} is not ISO-8601: {value[:32]!r}")
        return event_ms
    if isinstance(value, int) and time_format in ("epoch_ms", "epoch_ms_or_iso8601"):
        return value
    if isinstance(value, int) and time_format == "epoch_us":
        return value // 1000
    if isinstance(value, int | float) and time_format == "epoch_s":
        # Through the shortest decimal of the number, which is the text the event had: 1733480000.123
        # is 1733480000123 ms (the float times 1000 is 1733480000122.99...).
        text = repr(value)
        if len(text) > _MAX_TIME_TEXT or not Decimal(text).is_finite():
            return reject(BAD_TIMESTAMP, f"{field} is not a time in seconds: {text[:32]}")
        return int((Decimal(text) * 1000).to_integral_value(rounding=ROUND_FLOOR))
    return reject(WRONG_TYPE, f"{field} must be a time ({time_format}), got {type_name(value)}")


def _judge(event: Mapping[str, Any], aggregation: Aggregation) -> Counted | Rejection | None:
    for condition in aggregation.where:
        value = lookup(event, condition.path)
        if not any(type(value) is type(wanted) and value == wanted for wanted in condition.values):
            return None
    key = _key_values(event, aggregation.key, aggregation)
    if key is None or isinstance(key, Rejection):
        return key
    distinct = _key_values(event, aggregation.distinct, aggregation)
    if distinct is None or isinstance(distinct, Rejection):
        return distinct
    measures: list[float | None] = []
    for path in aggregation.measures:
        value = lookup(event, path)
        if value is MISSING or value is None:
            if aggregation.missing_measure == "dead_letter":
                return reject(MISSING_FIELD, f"{path.text} is {'missing' if value is MISSING else 'null'} "
                                             f"(aggregation {aggregation.name})")
            measures.append(None)
            continue
        number = check_number(value, path.text)
        if isinstance(number, Rejection):
            return number
        measures.append(number)
    return Counted(key, tuple(measures), distinct)


def _key_values(event: Mapping[str, Any], fields: tuple[KeyField, ...],
                aggregation: Aggregation) -> Key | Rejection | None:
    """The values of key-like fields (key parts, distinct fields); None: the event is skipped."""
    values: list[KeyValue | None] = []
    for field in fields:
        path = field.path
        value = lookup(event, path)
        if value is MISSING or value is None:
            if aggregation.missing_key == "dead_letter":
                return reject(MISSING_FIELD, f"{path.text} is {'missing' if value is MISSING else 'null'} "
                                             f"(aggregation {aggregation.name})")
            if aggregation.missing_key == "skip":
                return None
            values.append(None)
            continue
        part = _key_part(value, field)
        if isinstance(part, Rejection):
            return part
        values.append(part)
    return tuple(values)


_TYPE_NAMES: Final = {"string": "a string", "int": "an integer", "bool": "a boolean"}


def _key_part(value: Any, field: KeyField) -> KeyValue | Rejection:
    path, key_type = field.path.text, field.type
    if key_type == "bool" and isinstance(value, bool):
        return value
    if key_type == "int" and isinstance(value, int) and not isinstance(value, bool):
        if -_INT64 <= value < _INT64:
            return value
        return reject(WRONG_TYPE, f"{path} is an integer beyond 64 bits")
    if key_type == "string" and isinstance(value, str):
        return check_string(value, path)
    return reject(WRONG_TYPE, f"{path} must be {_TYPE_NAMES[key_type]}, got {type_name(value)}")


# -- the common case, quickly ---------------------------------------------------------------------

# How SpecJudge reads one aggregation, each field by its place in SpecJudge._paths: its conditions (field,
# the accepted (type, value) pairs), its key parts then its distinct fields (field, type), how many of
# them are key parts, its measures, and whether a missing measure is left out (skip).
_Plan = tuple[tuple[tuple[int, frozenset[tuple[type, KeyValue]]], ...], tuple[tuple[int, type], ...], int,
              tuple[int, ...], bool]
_KEY_TYPES: Final = {"string": str, "int": int, "bool": bool}
_VALUE_TYPES: Final = frozenset((str, int, bool))


class SpecJudge:
    """judge() and judge_object() for one spec. Per event in Python, the rules' generality (a call per
    field and aggregation, a rejection built and dropped) cost five times the decode (NOTES.md, Cost per
    event); this decides the common case on its own, each field looked up once: time valid, and in each
    aggregation every condition's field of a condition value's type, every key part and distinct field
    there and valid, every measure a finite number (or missing with ``missing_measure = "skip"``). Any
    other event goes to the rules, whole, so each judgement is theirs by construction."""

    __slots__ = ("spec", "_time", "_iso", "_seconds", "_paths", "_plans")

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self._time = spec.time
        self._iso = spec.time.format in ("iso8601", "epoch_ms_or_iso8601")  # a string time is ISO-8601
        self._seconds = spec.time.format == "epoch_s"
        paths: dict[tuple[str, ...], int] = {spec.time.path.names: 0}

        def place(path: FieldPath) -> int:
            return paths.setdefault(path.names, len(paths))

        self._plans: tuple[_Plan, ...] = tuple(
            (tuple((place(c.path), frozenset((type(v), v) for v in c.values)) for c in a.where),
             tuple((place(f.path), _KEY_TYPES[f.type]) for f in (*a.key, *a.distinct)), len(a.key),
             tuple(place(path) for path in a.measures), a.missing_measure == "skip")
            for a in spec.aggregations)
        self._paths = tuple(paths)

    def judge(self, raw: bytes, *, max_bytes: int, min_event_ms: int, max_event_ms: int) -> Judgement | Rejection:
        """judge(raw, self.spec, ...)."""
        event = json_object(raw, max_bytes)
        if event is not None:
            return self.judge_object(event, min_event_ms=min_event_ms, max_event_ms=max_event_ms)
        return judge(raw, self.spec, max_bytes=max_bytes, min_event_ms=min_event_ms, max_event_ms=max_event_ms)

    def judge_object(self, event: dict[str, Any], *, min_event_ms: int, max_event_ms: int) -> Judgement | Rejection:
        """judge_object(event, self.spec, ...)."""
        quick = self._quick(event, min_event_ms, max_event_ms)
        if quick is not None:
            return quick
        return judge_object(event, self.spec, min_event_ms=min_event_ms, max_event_ms=max_event_ms)

    def _quick(self, event: dict[str, Any], min_event_ms: int, max_event_ms: int) -> Judgement | None:
        fields: list[Any] = [_get(event, names) for names in self._paths]
        time = fields[0]
        event_ms: int | Rejection | None
        if type(time) is str and self._iso:
            event_ms = iso_to_epoch_ms(time)
        elif self._seconds and (type(time) is float or type(time) is int):
            event_ms = _seconds_to_ms(time)
        else:
            event_ms = event_time(time, self._time)
        if type(event_ms) is not int or not min_event_ms <= event_ms <= max_event_ms:
            return None
        results: list[Counted | None] = []
        for where, keys, key_parts, measures, skip in self._plans:
            for place, accepted in where:
                value = fields[place]
                if type(value) not in _VALUE_TYPES or (type(value), value) not in accepted:
                    break
            else:
                parts: list[KeyValue] = []
                for place, wanted in keys:
                    value = fields[place]
                    kind = type(value)  # compared as a name: mypy would narrow the value to `object`
                    if kind is not wanted:
                        return None
                    if wanted is str:
                        if not value or len(value) > MAX_STRING_CHARS or forbidden_char(value):
                            return None
                    elif wanted is int and not -_INT64 <= value < _INT64:
                        return None
                    parts.append(value)
                values: list[float | None] = []
                for place in measures:
                    value = fields[place]
                    kind = type(value)
                    if kind is float or kind is int:
                        try:
                            number = float(value)
                        except OverflowError:
                            return None
                        if not isfinite(number):
                            return None
                        values.append(number)
                    elif skip and (value is None or value is MISSING):
                        values.append(None)
                    else:
                        return None
                results.append(Counted(tuple(parts[:key_parts]), tuple(values), tuple(parts[key_parts:])))
                continue
            results.append(None)
        return Judgement(event_ms, tuple(results))


# Below this, a float's time in seconds with at most 3 decimals has at most 15 significant digits, so it is the only
# decimal of that many digits that rounds to the float: its shortest text (repr) is that decimal.
_EXACT_MS_BELOW_S: Final = 1e12


def _seconds_to_ms(seconds: float) -> int | None:
    """event_time's epoch_s for a non-negative number written without an exponent (the common case),
    from the same shortest decimal text, without Decimal; None otherwise."""
    if type(seconds) is float and 0.0 <= seconds < _EXACT_MS_BELOW_S:
        # The usual time has at most 3 decimals: then the float is the one nearest ms / 1000 (division is
        # correctly rounded), and its text is ms / 1000's, so the rules' floor of text x 1000 is ms. A time with
        # more decimals fails the check and is read from its text below.
        ms = round(seconds * 1000)
        if ms / 1000 == seconds:
            return ms
    text = repr(seconds)
    if len(text) > _MAX_TIME_TEXT or text[0] == "-" or "e" in text or "n" in text:  # nan, inf: not finite
        return None
    whole, _, fraction = text.partition(".")
    return int(whole) * 1000 + int((fraction + "000")[:3])


def _get(event: dict[str, Any], names: tuple[str, ...]) -> Any:
    """lookup() by the path's names."""
    value: Any = event
    for name in names:
        if not isinstance(value, dict):
            return MISSING
        value = value.get(name, MISSING)
    return value
