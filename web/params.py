"""Parsing and shaping for the web API: pure functions, so bad input is a 400, never a 500."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from aggregations.spec import Aggregation, KeyValue, Spec
from batch.periods import parse_time
from formats.aggregates import STATISTICS
from formats.events import iso_utc as iso
from formats.keys import MAX_PART_CHARS
from formats.lake import PERIOD_MS
from tables.windows import WindowSpec

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000
MAX_EPOCH_DIGITS = 16  # epoch milliseconds until the year 318857 (the range checks come after)
MAX_EVENT_TYPE_CHARS = 1000
# Window starts from 2000-01-01 to 2100-01-01 (ms): anything else is a typo, not a window.
MIN_START_MS = 946_684_800_000
MAX_START_MS = 4_102_444_800_000

# /v1/rollups: periods per answer by default and at most (each period is one S3 object read).
ROLLUP_DEFAULT_PERIODS: Final = {"hourly": 48, "daily": 31}
ROLLUP_MAX_PERIODS: Final = {"hourly": 7 * 24, "daily": 92}


class BadParameterError(ValueError):
    """A request parameter that is missing or malformed (HTTP 400)."""


class UnknownNameError(LookupError):
    """A name that does not exist, such as a window not configured (HTTP 404)."""


def find_window(windows: Sequence[WindowSpec], name: str) -> WindowSpec:
    for spec in windows:
        if spec.name == name:
            return spec
    known = ", ".join(spec.name for spec in windows)
    raise UnknownNameError(f"unknown window {name!r}; configured windows: {known}")


def find_aggregation(spec: Spec | None, name: str) -> Aggregation:
    aggregations = spec.aggregations if spec is not None else ()
    for aggregation in aggregations:
        if aggregation.name == name:
            return aggregation
    known = ", ".join(a.name for a in aggregations) or "none (AGGREGATIONS is not set: the pipeline runs the " \
                                                       "article's job, see /v1/windows)"
    raise UnknownNameError(f"unknown aggregation {name!r}; aggregations: {known}")


def find_aggregation_window(windows: Sequence[WindowSpec], aggregation: Aggregation, name: str) -> WindowSpec:
    """A window the aggregation keeps (its `windows`)."""
    for spec in windows:
        if spec.name == name and name in aggregation.windows:
            return spec
    raise UnknownNameError(f"aggregation {aggregation.name!r} keeps no window {name!r}; its windows: "
                           f"{', '.join(aggregation.windows)}")


_INT64: Final = 2**63


def parse_key(query: Mapping[str, str], aggregation: Aggregation) -> tuple[KeyValue | None, ...]:
    """The key of one of the aggregation's keys, each part a query parameter named by its column, of the
    part's type: a string (1 to MAX_PART_CHARS characters), an integer or `true`/`false`; empty for a
    null part (an aggregation whose `missing_key` is `null` has them)."""
    columns = ", ".join(part.path.column for part in aggregation.key)
    for part in aggregation.key:
        if part.path.column not in query:
            raise BadParameterError(f"{part.path.column} is required: the key of aggregation {aggregation.name!r} "
                                    f"is {columns}")
    return tuple(parse_key_filter(query, aggregation).values())


def parse_key_filter(query: Mapping[str, str], aggregation: Aggregation) -> dict[str, KeyValue | None]:
    """The key parts among the query parameters (column -> part, in the key's order), each as parse_key
    reads it; the others are absent."""
    parts: dict[str, KeyValue | None] = {}
    for part in aggregation.key:
        column = part.path.column
        text = query.get(column)
        if text is None:
            continue
        if text == "":
            if aggregation.missing_key != "null":
                raise BadParameterError(f"{column} is empty: aggregation {aggregation.name!r} has no null key parts")
            parts[column] = None
        elif part.type == "int":
            try:
                value = int(text)
            except ValueError:
                raise BadParameterError(f"{column} must be an integer, got {text[:64]!r}") from None
            if not -_INT64 <= value < _INT64:
                raise BadParameterError(f"{column} is an integer beyond 64 bits")
            parts[column] = value
        elif part.type == "bool":
            if text not in ("true", "false"):
                raise BadParameterError(f"{column} must be true or false, got {text[:64]!r}")
            parts[column] = text == "true"
        else:
            if len(text) > MAX_PART_CHARS:
                raise BadParameterError(f"{column} is longer than {MAX_PART_CHARS} characters")
            parts[column] = text
    return parts


def aggregation_to_api(aggregation: Aggregation) -> dict[str, Any]:
    """What /v1/aggregations says of one aggregation: the spec's fields, with each field's column."""
    def field(path: Any) -> dict[str, str]:
        return {"field": path.text, "column": path.column}

    return {"name": aggregation.name,
            "key": [{**field(part.path), "type": part.type} for part in aggregation.key],
            "missing_key": aggregation.missing_key,
            "measures": [field(measure) for measure in aggregation.measures],
            "missing_measure": aggregation.missing_measure,
            "where": [{"field": c.path.text, "values": list(c.values)} for c in aggregation.where],
            "distinct": [{**field(part.path), "type": part.type} for part in aggregation.distinct],
            "windows": list(aggregation.windows), "redis": aggregation.redis}


def parse_measure(query: Mapping[str, str], aggregation: Aggregation) -> tuple[str, str]:
    """`measure` as ``<measure column>.<statistic>`` (the alert rules' form): (column, statistic)."""
    text = query.get("measure", "")
    column, _, statistic = text.rpartition(".")
    columns = [measure.column for measure in aggregation.measures]
    if column not in columns or statistic not in STATISTICS:
        raise BadParameterError(f"measure must be <measure>.<statistic>: a measure of {aggregation.name!r}, "
                                f"{', '.join(columns)}, and one of {', '.join(STATISTICS)} (got {text[:64]!r})")
    return column, statistic


def parse_order(query: Mapping[str, str]) -> bool:
    """`order`: "desc" (the default, highest first) or "asc"; True for descending."""
    text = query.get("order", "desc")
    if text not in ("desc", "asc"):
        raise BadParameterError(f"order must be 'desc' or 'asc', got {text[:64]!r}")
    return text == "desc"


def parse_limit(query: Mapping[str, str], default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT) -> int:
    text = query.get("limit")
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadParameterError(f"limit must be an integer from 1 to {maximum}, got {text!r}") from None
    if not 1 <= value <= maximum:
        raise BadParameterError(f"limit must be an integer from 1 to {maximum}, got {value}")
    return value


def parse_event_type(query: Mapping[str, str], *, required: bool) -> str | None:
    value = query.get("event_type")
    if value is None or value == "":
        if required:
            raise BadParameterError("event_type is required")
        return None
    if len(value) > MAX_EVENT_TYPE_CHARS:
        raise BadParameterError(f"event_type is longer than {MAX_EVENT_TYPE_CHARS} characters")
    return value


def parse_after(query: Mapping[str, str]) -> tuple[int, str] | None:
    """`after`, a page's cursor as the previous page's `next` gave it: ``<window start ms>:<event type>``."""
    text = query.get("after")
    if text is None or text == "":
        return None
    start, colon, event_type = text.partition(":")
    if not (colon and start.isascii() and start.isdigit() and len(start) <= MAX_EPOCH_DIGITS and event_type):
        raise BadParameterError(f"after must be the 'next' of the previous page (<start ms>:<event type>), got "
                                f"{text[:64]!r}")
    if len(event_type) > MAX_EVENT_TYPE_CHARS:
        raise BadParameterError(f"after's event type is longer than {MAX_EVENT_TYPE_CHARS} characters")
    return int(start), event_type


def request_host(header: str | None) -> str | None:
    """The host a request's Host header names, without its port (IPv6 without brackets); None if absent."""
    if not header:
        return None
    if header.startswith("["):
        return header[1:].partition("]")[0]
    name, _, port = header.rpartition(":")
    return name if name and port.isdigit() else header


def page_cursor(start_ms: int, event_type: str) -> str:
    """The `after` of the page following a row (parse_after reads it)."""
    return f"{start_ms}:{event_type}"


def parse_start(query: Mapping[str, str], spec: WindowSpec) -> int:
    """`start` as epoch milliseconds or ISO-8601 with a time zone; must be a start of `spec`."""
    text = query.get("start")
    if text is None or text == "":
        raise BadParameterError("start is required: a window start as epoch milliseconds or ISO-8601 (e.g. "
                           "2026-11-26T03:00:00Z)")
    start_ms = _parse_instant_ms(text)
    if not MIN_START_MS <= start_ms < MAX_START_MS:
        raise BadParameterError(f"start {text!r} is outside 2000-01-01..2100-01-01")
    if start_ms % spec.step_ms:
        previous = start_ms - start_ms % spec.step_ms
        raise BadParameterError(f"start {text!r} is not a start of window {spec.name!r} (it starts every "
                           f"{spec.step_ms} ms; the window containing it starts at {previous} = {iso(previous)})")
    return start_ms


def _parse_instant_ms(text: str) -> int:
    digits = text.removeprefix("-")
    if digits.isascii() and digits.isdigit():  # not str.isdigit alone: "²" is a digit to it, and not to int()
        if len(digits) > MAX_EPOCH_DIGITS:
            raise BadParameterError(f"start is epoch milliseconds of more than {MAX_EPOCH_DIGITS} digits")
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadParameterError(f"start must be epoch milliseconds or ISO-8601, got {text!r}") from None
    if moment.tzinfo is None:
        raise BadParameterError(f"start {text!r} has no time zone; add Z for UTC")
    try:
        return round(moment.timestamp() * 1000)
    except (OverflowError, ValueError):  # year 1 in a zone east of UTC
        raise BadParameterError(f"start {text!r} is outside 2000-01-01..2100-01-01") from None


def watermark_json(low_ms: int | None, advanced_at_ms: int | None, now_ms: int,
                   by_partition: Mapping[int, int]) -> dict[str, Any]:
    return {
        "low_ms": low_ms,
        "low": None if low_ms is None else iso(low_ms),
        "age_ms": None if advanced_at_ms is None else max(0, now_ms - advanced_at_ms),
        "by_partition": {str(p): ms for p, ms in sorted(by_partition.items())},
    }


@dataclass(frozen=True, slots=True)
class RollupRange:
    """What /v1/rollups/{period} reads: the periods overlapping [from_ms, to_ms), of one event type or all."""

    period: str
    from_ms: int  # the start of the first period
    to_ms: int
    event_type: str | None


def parse_rollup_range(period: str, query: Mapping[str, str], now_ms: int, *, by_event_type: bool = True
                       ) -> RollupRange:
    """`from` and `to` as --from/--to take them (batch/periods.py parse_time: ISO-8601, no zone
    meaning UTC, or epoch ms). Either missing is derived from the other with the default span; both
    missing is the default span up to the end of the current period. `from` is rounded down to its
    period's start; at most ROLLUP_MAX_PERIODS periods."""
    if period not in PERIOD_MS:
        raise BadParameterError(f"unknown rollup period {period!r}; periods: {', '.join(PERIOD_MS)}")
    length = PERIOD_MS[period]
    span_ms = ROLLUP_DEFAULT_PERIODS[period] * length
    from_ms, to_ms = _rollup_instant(query, "from"), _rollup_instant(query, "to")
    if from_ms is None and to_ms is None:
        to_ms = now_ms - now_ms % length + length
    if from_ms is None:
        assert to_ms is not None
        from_ms = to_ms - span_ms
    elif to_ms is None:
        to_ms = from_ms + span_ms
    if to_ms <= from_ms:
        raise BadParameterError(f"to ({iso(to_ms)}) must be after from ({iso(from_ms)})")
    first = from_ms - from_ms % length
    periods = -(-(to_ms - first) // length)
    maximum = ROLLUP_MAX_PERIODS[period]
    if periods > maximum:
        raise BadParameterError(f"from {iso(from_ms)} to {iso(to_ms)} spans {periods} {period} periods; at most "
                                f"{maximum} per request")
    return RollupRange(period, first, to_ms, parse_event_type(query, required=False) if by_event_type else None)


def _rollup_instant(query: Mapping[str, str], name: str) -> int | None:
    text = query.get(name)
    if text is None or text == "":
        return None
    try:
        epoch_ms = parse_time(text)
    except (ValueError, OverflowError) as exc:
        raise BadParameterError(f"{name}: {exc}") from None
    if epoch_ms >= MAX_START_MS:
        raise BadParameterError(f"{name} {text!r} is outside 2000-01-01..2100-01-01")
    return epoch_ms
