"""An aggregation spec: which of an event's fields are its time, its keys and its measures, and which
windows and outputs each aggregation has. Pure: `parse_spec(text, windows)` takes the file's text
and the configured window names and returns the spec, or raises `SpecError` naming the aggregation
and the field (settings.py makes it one line naming the file too). The file (TOML):

    [time]                            # the event's time, declared once
    field = "ts"                      # a field path: names separated by "." into nested objects
    format = "epoch_s"                # iso8601, epoch_s, epoch_ms, epoch_us or epoch_ms_or_iso8601

    [[aggregation]]
    name = "page_views"               # [a-z0-9][a-z0-9_-]*, at most 63: a path segment and a key part
    key = ["page.path", "status:int"] # 1 to 4 field paths, each a string unless it says :int or :bool
    missing_key = "dead_letter"       # a key part missing or null: dead_letter, skip or null (a null part)
    measures = ["ms_on_page"]         # 1 to 8 field paths of numbers: count, sum, min, max, mean of each
    missing_measure = "dead_letter"   # a measure missing or null: dead_letter, or skip (left out of it)
    where = { country = ["DE", "FR"], "page.kind" = "product" }  # optional: equality or membership
    distinct = ["uid"]                # optional: fields the batch layer counts distinct values of
    windows = ["tumbling_1m"]         # optional: names of WINDOWS (default: all of them)
    redis = "every"                   # every window, only the latest window per key, or off

A field path's names are 1 to 64 characters of letters, digits, "_", "-", "@" and "$"; its column in
the lake is its names joined by "_". A key part (and a distinct field) has one type, so that its
column has one: a string (the default), an integer (64 bits, ``:int``) or a boolean (``:bool``).
An event that one aggregation rejects (a dead letter for it) or skips still counts in the others;
what counts and what is rejected is aggregations/judge.py's.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from formats.aggregates import AggregateLayout
from formats.batch import ROLLUP_STATISTICS, AggregateRollupLayout
from formats.keys import MAX_PART_CHARS

__all__ = [
    "MISSING_KEY",
    "MISSING_MEASURE",
    "REDIS_OUTPUTS",
    "TIME_FORMATS",
    "Aggregation",
    "Condition",
    "FieldPath",
    "KeyField",
    "Spec",
    "SpecError",
    "TimeField",
    "article_spec",
    "field_path",
    "parse_spec",
]

TIME_FORMATS: Final = ("iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ms_or_iso8601")
KEY_TYPES: Final = ("string", "int", "bool")
MISSING_KEY: Final = ("dead_letter", "skip", "null")
MISSING_MEASURE: Final = ("dead_letter", "skip")
REDIS_OUTPUTS: Final = ("every", "latest", "off")
MAX_AGGREGATIONS: Final = 32
MAX_KEY_PARTS: Final = 4
MAX_MEASURES: Final = 8
MAX_CONDITIONS: Final = 16
MAX_CONDITION_VALUES: Final = 1000
MAX_PATH_DEPTH: Final = 8
# The columns every aggregation's rows have besides its key parts and measures.
RESERVED_COLUMNS: Final = frozenset({"window", "window_start", "window_end", "revision", "late_count"})
# And those of its rollups (formats/batch.AggregateRollupLayout).
RESERVED_ROLLUP_COLUMNS: Final = frozenset({"period", "period_start", "period_end", "events"})
MEASURE_STATISTICS: Final = ("count", "sum", "min", "max", "mean")
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_FIELD_NAME: Final = re.compile(r"[A-Za-z0-9_@$-]{1,64}")
_TOP_LEVEL: Final = frozenset({"time", "aggregation"})
_TIME_FIELDS: Final = frozenset({"field", "format"})
_FIELDS: Final = frozenset({"name", "key", "missing_key", "measures", "missing_measure", "where", "distinct",
                            "windows", "redis"})
_INT64: Final = 2**63

KeyValue = str | int | bool  # what a key part or a condition's value may be


class SpecError(ValueError):
    """The spec cannot be used; the message names the aggregation and the field."""


@dataclass(frozen=True, slots=True)
class FieldPath:
    """A path into an event's nested objects, such as ``page.path``."""

    names: tuple[str, ...]

    @property
    def text(self) -> str:
        return ".".join(self.names)

    @property
    def column(self) -> str:
        """Its column in the lake's rows."""
        return "_".join(self.names)


@dataclass(frozen=True, slots=True)
class KeyField:
    """A key part or a distinct field: where it is, and its type (one of KEY_TYPES)."""

    path: FieldPath
    type: str = "string"


@dataclass(frozen=True, slots=True)
class TimeField:
    path: FieldPath
    format: str  # one of TIME_FORMATS


@dataclass(frozen=True, slots=True)
class Condition:
    """The field's value is one of `values` (one value: equality). Types are strict: 1 is not true."""

    path: FieldPath
    values: tuple[KeyValue, ...]


@dataclass(frozen=True, slots=True)
class Aggregation:
    name: str
    key: tuple[KeyField, ...]
    missing_key: str  # one of MISSING_KEY
    measures: tuple[FieldPath, ...]
    missing_measure: str  # one of MISSING_MEASURE
    where: tuple[Condition, ...]
    distinct: tuple[KeyField, ...]
    windows: tuple[str, ...]  # names of the configured windows, in their configured order
    redis: str  # one of REDIS_OUTPUTS

    def layout(self) -> AggregateLayout:
        """The columns of its rows, as formats/aggregates.py lays them out."""
        return AggregateLayout(tuple((part.path.column, part.type) for part in self.key),
                               tuple(measure.column for measure in self.measures))

    def rollup_layout(self) -> AggregateRollupLayout:
        """The columns of its hourly and daily rollups (the batch layer's)."""
        return AggregateRollupLayout(tuple((part.path.column, part.type) for part in self.key),
                                     tuple(measure.column for measure in self.measures),
                                     tuple(field.path.column for field in self.distinct))

    def rollup_columns(self) -> list[str]:
        """The columns of its rollups besides RESERVED_ROLLUP_COLUMNS."""
        return [part.path.column for part in self.key] + [
            f"{measure.column}_{statistic}" for measure in self.measures for statistic in ROLLUP_STATISTICS] + [
            f"{field.path.column}_distinct" for field in self.distinct]

    def columns(self) -> list[str]:
        """The columns of its rows besides RESERVED_COLUMNS: key parts, then each measure's statistics."""
        return [part.path.column for part in self.key] + [f"{measure.column}_{statistic}"
                                                          for measure in self.measures
                                                          for statistic in MEASURE_STATISTICS]


@dataclass(frozen=True, slots=True)
class Spec:
    time: TimeField
    aggregations: tuple[Aggregation, ...]


def article_spec(windows: Collection[str]) -> Spec:
    """The article's job as a spec (deploy/aggregations/article.toml): per event type, the value of each
    event, every window, Redis every window; the distinct users in the batch layer's rollups. A spec
    equal to it runs the article's job itself, with its outputs byte for byte (settings.py): the
    article's validation order and layout, which a spec's judge and layout would not reproduce exactly."""
    return Spec(TimeField(FieldPath(("timestamp",)), "epoch_ms_or_iso8601"), (Aggregation(
        name="events", key=(KeyField(FieldPath(("event_type",))),), missing_key="dead_letter",
        measures=(FieldPath(("value",)),), missing_measure="dead_letter", where=(),
        distinct=(KeyField(FieldPath(("user_id",))),), windows=tuple(windows), redis="every"),))


def field_path(text: object) -> FieldPath:
    """A field path from its text, or ValueError saying what a field path is."""
    if not isinstance(text, str):
        raise ValueError(f"expected a field path such as \"page.path\" (got {text!r})")
    names = tuple(text.split("."))
    if len(names) > MAX_PATH_DEPTH or not all(_FIELD_NAME.fullmatch(name) for name in names):
        raise ValueError(f"expected a field path of 1 to {MAX_PATH_DEPTH} names of letters, digits, '_', '-', '@' "
                         f"or '$', separated by '.' (got {text!r})")
    return FieldPath(names)


def parse_spec(text: str, windows: Collection[str]) -> Spec:
    """The spec of a spec file; SpecError on its first problem. `windows`: the configured window names,
    in their order."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"not valid TOML: {exc}") from None
    extra = sorted(set(document) - _TOP_LEVEL)
    if extra:
        raise SpecError(f"unknown top-level key {extra[0]!r}: expected a [time] table and [[aggregation]] tables")
    time = _time_field(document.get("time"))
    tables = document.get("aggregation")
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise SpecError("expected one or more [[aggregation]] tables")
    if len(tables) > MAX_AGGREGATIONS:
        raise SpecError(f"{len(tables)} aggregations: at most {MAX_AGGREGATIONS}")
    aggregations: list[Aggregation] = []
    for index, table in enumerate(tables):
        aggregation = _aggregation(index, table, list(windows))
        if any(a.name == aggregation.name for a in aggregations):
            raise SpecError(f"aggregation {aggregation.name!r}: field 'name': another aggregation has the same name")
        aggregations.append(aggregation)
    return Spec(time, tuple(aggregations))


def _time_field(table: object) -> TimeField:
    if not isinstance(table, dict):
        raise SpecError("[time]: expected a table with the event's time field and its format, such as "
                        "[time] field = \"ts\" format = \"epoch_ms\"")
    for key in table:
        if key not in _TIME_FIELDS:
            raise SpecError(f"[time]: unknown field {key!r}; expected field and format")
    try:
        path = field_path(table.get("field"))
    except ValueError as exc:
        raise SpecError(f"[time]: field 'field': {exc}") from None
    time_format = table.get("format")
    if time_format not in TIME_FORMATS:
        raise SpecError(f"[time]: field 'format': expected one of {', '.join(TIME_FORMATS)} (got {time_format!r})")
    return TimeField(path, time_format)


def _aggregation(index: int, table: Mapping[str, Any], windows: list[str]) -> Aggregation:
    raw_name = table.get("name")
    if not isinstance(raw_name, str) or not _NAME.fullmatch(raw_name):
        raise SpecError(f"aggregation #{index + 1}: field 'name': expected 1 to 63 characters of [a-z0-9_-] "
                        f"starting with a letter or digit (got {raw_name!r})")
    name = raw_name

    def fail(field: str, message: str) -> SpecError:
        return SpecError(f"aggregation {name!r}: field {field!r}: {message}")

    for key in table:
        if key not in _FIELDS:
            raise fail(key, f"unknown field; expected one of {', '.join(sorted(_FIELDS))}")
    key = _key_fields(table, "key", 1, fail, required=True)
    measures = _paths(table, "measures", 1, MAX_MEASURES, fail, required=True)
    distinct = _key_fields(table, "distinct", 0, fail, required=False)
    missing_key = _choice(table, "missing_key", MISSING_KEY, fail)
    missing_measure = _choice(table, "missing_measure", MISSING_MEASURE, fail)
    redis = _choice(table, "redis", REDIS_OUTPUTS, fail)
    where = _conditions(table.get("where", {}), fail)
    chosen = table.get("windows", windows)
    if (not isinstance(chosen, list) or not chosen or len(set(chosen)) != len(chosen)
            or not all(window in windows for window in chosen)):
        raise fail("windows", f"expected a list of distinct names of the WINDOWS setting, {', '.join(windows)} "
                              f"(got {chosen!r})")
    aggregation = Aggregation(name=name, key=key, missing_key=missing_key, measures=measures,
                              missing_measure=missing_measure, where=where, distinct=distinct,
                              windows=tuple(w for w in windows if w in chosen), redis=redis)
    for columns, reserved in ((aggregation.columns(), RESERVED_COLUMNS),
                              (aggregation.rollup_columns(), RESERVED_ROLLUP_COLUMNS)):
        clash = next((c for c in columns if columns.count(c) > 1 or c in reserved), None)
        if clash is not None:
            field = ("key" if clash in [p.path.column for p in key] else
                     "distinct" if clash.endswith("_distinct") and distinct else "measures")
            raise fail(field, f"its rows would have the column {clash!r} twice (or a reserved one: "
                              f"{', '.join(sorted(RESERVED_COLUMNS | RESERVED_ROLLUP_COLUMNS))}); a path's "
                              "column is its names joined by '_'")
    return aggregation


def _paths(table: Mapping[str, Any], field: str, low: int, high: int, fail: Any, *,
           required: bool) -> tuple[FieldPath, ...]:
    raw = table.get(field)
    if raw is None and not required:
        return ()
    if not isinstance(raw, list) or not low <= len(raw) <= high:
        raise fail(field, f"expected a list of {low} to {high} field paths (got {raw!r})")
    try:
        paths = tuple(field_path(item) for item in raw)
    except ValueError as exc:
        raise fail(field, str(exc)) from None
    if len(set(paths)) != len(paths):
        raise fail(field, "a field path is listed twice")
    return paths


def _key_fields(table: Mapping[str, Any], field: str, low: int, fail: Any, *,
                required: bool) -> tuple[KeyField, ...]:
    raw = table.get(field)
    if raw is None and not required:
        return ()
    if not isinstance(raw, list) or not low <= len(raw) <= MAX_KEY_PARTS:
        raise fail(field, f"expected a list of {low} to {MAX_KEY_PARTS} field paths (got {raw!r})")
    fields = []
    for item in raw:
        text, _, key_type = item.partition(":") if isinstance(item, str) else (item, "", "")
        try:
            path = field_path(text)
        except ValueError as exc:
            raise fail(field, str(exc)) from None
        key_type = key_type or "string"
        if key_type not in KEY_TYPES:
            raise fail(field, f"{item!r}: expected a type of {', '.join(KEY_TYPES)} after ':' (string if none)")
        fields.append(KeyField(path, key_type))
    if len({f.path for f in fields}) != len(fields):
        raise fail(field, "a field path is listed twice")
    return tuple(fields)


def _choice(table: Mapping[str, Any], field: str, options: tuple[str, ...], fail: Any) -> str:
    value = table.get(field, options[0])
    if value not in options:
        raise fail(field, f"expected one of {', '.join(options)} (got {value!r})")
    return str(value)


def _conditions(raw: object, fail: Any) -> tuple[Condition, ...]:
    if not isinstance(raw, dict) or len(raw) > MAX_CONDITIONS:
        raise fail("where", f"expected a table of at most {MAX_CONDITIONS} field paths, each with a value or a "
                            "list of values, such as { country = [\"DE\", \"FR\"] }")
    conditions = []
    for text, value in raw.items():
        try:
            path = field_path(text)
        except ValueError as exc:
            raise fail("where", str(exc)) from None
        values = value if isinstance(value, list) else [value]
        if not values or len(values) > MAX_CONDITION_VALUES or not all(_key_value(v) for v in values):
            raise fail("where", f"{text!r}: expected a string, an integer, a boolean or a list of 1 to "
                                f"{MAX_CONDITION_VALUES} of them (got {value!r})")
        conditions.append(Condition(path, tuple(values)))
    return tuple(conditions)


def _key_value(value: object) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and 0 < len(value) <= MAX_PART_CHARS  # floats are not key values
