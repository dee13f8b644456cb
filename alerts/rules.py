"""Alert rules on closed windows: their shape, and the one parser of the rules file (TOML).

Pure: `parse_rules(text, windows)` takes the file's text and the configured windows and
returns the rules, or raises `RuleError` naming the rule and the field, which settings.py
turns into one line at startup. The file is a list of `[[rule]]` tables:

    [[rule]]
    name = "error_spike"          # [A-Za-z0-9_.-], unique: part of every alert id
    kind = "threshold"            # threshold, change, anomaly or absence
    window = "tumbling_1m"        # one of WINDOWS
    event_types = ["error"]       # the types it watches; omitted: every type this partition sees
    measure = "count"             # count, sum, mean, min or max (not for absence)
    op = ">"                      # >, >=, < or <= (not for absence)
    threshold = 100               # the value (threshold), the ratio (change), the z-score (anomaly)
    for = 2                       # consecutive breaching windows before it fires (default 1)
    resolve_for = 1               # consecutive normal windows before it resolves (default 1)
    trailing = 10                 # anomaly only: closed windows the z-score is taken against
    severity = "critical"         # critical, warning or info
    labels = { team = "payments" }

Absence rules must list their event types: a type nobody named cannot be missed, and it
bounds the state a hostile producer can make the pipeline keep.

With an AGGREGATIONS spec, a rule judges one aggregation's windows, one key at a time:

    [[rule]]
    name = "hot_device"
    kind = "threshold"
    aggregation = "devices"           # the aggregation of the spec it judges (required with a spec)
    window = "tumbling_1m"            # one of the aggregation's windows
    keys = [{ device_id = "d-17" }]   # the keys it watches, each with every key column; omitted: every key
    measure = "metrics_temp.max"      # <measure column>.<count, sum, mean, min or max>
    op = ">"
    threshold = 30

The rule's `window` is then the family (`devices/tumbling_1m`) and its `event_types` the keys as
key texts (formats/partials.key_text), which is what alerts carry in their `window` and `event_type`.
A key with a row in which the measure has no value is judged as a type without a row.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aggregations.spec import Aggregation, Spec
from formats.keys import MAX_PART_CHARS
from formats.partials import key_text
from tables.windows import WindowSpec

KINDS: Final = ("threshold", "change", "anomaly", "absence")
MEASURES: Final = ("count", "sum", "mean", "min", "max")
OPS: Final = (">", ">=", "<", "<=")
SEVERITIES: Final = ("critical", "warning", "info")
MAX_RULES: Final = 200
MAX_WINDOWS: Final = 1000  # bound on for, resolve_for and trailing: the state kept per type
MAX_LABELS: Final = 20
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_FIELDS: Final = frozenset({"name", "kind", "window", "event_types", "measure", "op", "threshold", "for",
                            "resolve_for", "trailing", "severity", "labels", "aggregation", "keys"})
MAX_KEYS: Final = 1000  # keys a rule of a spec may list


class RuleError(ValueError):
    """The rules file cannot be used; the message names the rule and the field."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: str
    window: str
    event_types: tuple[str, ...]  # empty: every type seen (not for absence)
    measure: str  # "count" for absence
    op: str
    threshold: float
    for_windows: int
    resolve_windows: int
    trailing: int  # anomaly: the trailing windows; 0 otherwise
    severity: str
    labels: tuple[tuple[str, str], ...]  # sorted by name
    aggregation: str | None = None  # a spec's rule: the aggregation whose windows it judges
    measure_index: int | None = None  # a spec's rule (not absence): which of the aggregation's measures

    def applies_to(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


def parse_rules(text: str, windows: Sequence[WindowSpec], spec: Spec | None = None) -> tuple[Rule, ...]:
    """The rules of a rules file, in file order; RuleError on the first problem. With a spec, every rule
    names one of its aggregations."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from None
    extra = sorted(set(document) - {"rule"})
    if extra:
        raise RuleError(f"unknown top-level key {extra[0]!r}: expected [[rule]] tables only")
    tables = document.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise RuleError("'rule' must be an array of tables: write each rule as [[rule]]")
    if len(tables) > MAX_RULES:
        raise RuleError(f"{len(tables)} rules: at most {MAX_RULES}")
    names = {spec.name for spec in windows}
    rules: list[Rule] = []
    for index, table in enumerate(tables):
        rule = _parse_rule(index, table, names, spec)
        if any(r.name == rule.name for r in rules):
            raise RuleError(f"rule {rule.name!r}: field 'name': another rule has the same name")
        rules.append(rule)
    return tuple(rules)


def _parse_rule(index: int, table: Mapping[str, Any], windows: set[str], spec: Spec | None) -> Rule:
    raw_name = table.get("name")
    if not isinstance(raw_name, str) or not _NAME.fullmatch(raw_name):
        raise RuleError(f"rule #{index + 1}: field 'name': expected 1 to 64 characters of letters, digits, "
                        f"'_', '.' or '-' (got {raw_name!r})")
    name = raw_name

    def fail(field: str, message: str) -> RuleError:
        return RuleError(f"rule {name!r}: field {field!r}: {message}")

    for key in table:
        if key not in _FIELDS:
            raise fail(key, f"unknown field; expected one of {', '.join(sorted(_FIELDS))}")
    kind = table.get("kind")
    if kind not in KINDS:
        raise fail("kind", f"expected one of {', '.join(KINDS)} (got {kind!r})")
    if spec is not None or "aggregation" in table or "keys" in table:
        return _parse_spec_rule(name, kind, table, spec, fail)
    window = table.get("window")
    if window not in windows:
        raise fail("window", f"expected one of the WINDOWS setting's names, {', '.join(sorted(windows))} "
                             f"(got {window!r})")
    event_types = table.get("event_types", [])
    if (not isinstance(event_types, list) or not all(isinstance(t, str) and 0 < len(t) <= MAX_PART_CHARS
                                                     for t in event_types)
            or len(set(event_types)) != len(event_types)):
        raise fail("event_types", f"expected a list of distinct event types of 1 to {MAX_PART_CHARS} characters")
    if kind == "absence" and not event_types:
        raise fail("event_types", "an absence rule must list the event types it watches")
    if kind == "absence":
        for key in ("measure", "op", "threshold", "trailing"):
            if key in table:
                raise fail(key, "not used by an absence rule (it fires on windows without a row of the type)")
        measure, op, threshold = "count", "<", 1.0
    else:
        measure = table.get("measure")
        if measure not in MEASURES:
            raise fail("measure", f"expected one of {', '.join(MEASURES)} (got {measure!r})")
        op, threshold = _comparison(table, fail)
    return _finish(name, kind, window, tuple(event_types), measure, op, threshold, table, fail)


def _finish(name: str, kind: str, window: str, event_types: tuple[str, ...], measure: str, op: str,
            threshold: float, table: Mapping[str, Any], fail: Any, aggregation: str | None = None,
            measure_index: int | None = None) -> Rule:
    """The fields every rule has the same way: trailing, severity, labels, for and resolve_for."""
    if kind == "anomaly":
        trailing = _count(table, "trailing", None, fail, low=2)
    elif "trailing" in table:
        raise fail("trailing", "only an anomaly rule has trailing windows")
    else:
        trailing = 0
    severity = table.get("severity", "warning")
    if severity not in SEVERITIES:
        raise fail("severity", f"expected one of {', '.join(SEVERITIES)} (got {severity!r})")
    labels = table.get("labels", {})
    if not isinstance(labels, dict) or len(labels) > MAX_LABELS:
        raise fail("labels", f"expected a table of at most {MAX_LABELS} labels, such as {{ team = \"web\" }}")
    for label, value in labels.items():
        if not _LABEL_NAME.fullmatch(label):
            raise fail("labels", f"label name {label!r}: expected [A-Za-z_][A-Za-z0-9_]*, as Prometheus")
        if not isinstance(value, str) or len(value) > 256:
            raise fail("labels", f"label {label!r}: expected a string of at most 256 characters")
    return Rule(name=name, kind=kind, window=window, event_types=event_types, measure=measure, op=op,
                threshold=threshold, for_windows=_count(table, "for", 1, fail),
                resolve_windows=_count(table, "resolve_for", 1, fail), trailing=trailing, severity=severity,
                labels=tuple(sorted(labels.items())), aggregation=aggregation, measure_index=measure_index)


def _comparison(table: Mapping[str, Any], fail: Any) -> tuple[str, float]:
    op = table.get("op")
    if op not in OPS:
        raise fail("op", f"expected one of {', '.join(OPS)} (got {op!r})")
    raw = table.get("threshold")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise fail("threshold", f"expected a finite number (got {raw!r})")
    return op, float(raw)


def _parse_spec_rule(name: str, kind: str, table: Mapping[str, Any], spec: Spec | None, fail: Any) -> Rule:
    """A rule of a spec's aggregation (the module doc)."""
    if spec is None:
        raise fail("aggregation" if "aggregation" in table else "keys",
                   "only with an AGGREGATIONS spec (without one, rules judge the article's windows by event_types)")
    names = [a.name for a in spec.aggregations]
    found = next((a for a in spec.aggregations if a.name == table.get("aggregation")), None)
    if found is None:
        raise fail("aggregation", f"expected one of the spec's aggregations, {', '.join(names)} "
                                  f"(got {table.get('aggregation')!r})")
    if "event_types" in table:
        raise fail("event_types", "a rule of an aggregation lists its keys (keys = [{ column = value }])")
    window = table.get("window")
    if window not in found.windows:
        raise fail("window", f"expected one of aggregation {found.name!r}'s windows, {', '.join(found.windows)} "
                             f"(got {window!r})")
    keys = tuple(key_text(parts) for parts in _keys(table.get("keys", []), found, fail))
    if kind == "absence" and not keys:
        raise fail("keys", "an absence rule must list the keys it watches")
    if kind == "absence":
        for key in ("measure", "op", "threshold", "trailing"):
            if key in table:
                raise fail(key, "not used by an absence rule (it fires on windows without a row of the key)")
        return _finish(name, kind, f"{found.name}/{window}", keys, "count", "<", 1.0, table, fail, found.name)
    measures = [m.column for m in found.measures]
    column, _, statistic = str(table.get("measure", "")).rpartition(".")
    if column not in measures or statistic not in MEASURES:
        raise fail("measure", f"expected <measure>.<statistic>: a measure of {found.name!r}, "
                              f"{', '.join(measures)}, and one of {', '.join(MEASURES)} "
                              f"(got {table.get('measure')!r})")
    op, threshold = _comparison(table, fail)
    return _finish(name, kind, f"{found.name}/{window}", keys, statistic, op, threshold, table, fail, found.name,
                   measures.index(column))


def _keys(raw: object, aggregation: Aggregation, fail: Any) -> list[tuple[str | int | bool, ...]]:
    columns = [part.path.column for part in aggregation.key]
    example = "{ " + ", ".join(f'{c} = "..."' for c in columns) + " }"
    if not isinstance(raw, list) or len(raw) > MAX_KEYS:
        raise fail("keys", f"expected a list of at most {MAX_KEYS} keys, each a table such as {example}")
    keys = []
    for item in raw:
        if not isinstance(item, dict) or sorted(item) != sorted(columns):
            raise fail("keys", f"each key gives every column of the aggregation's key once, as {example} "
                               f"(got {item!r})")
        parts = []
        for part in aggregation.key:
            value = item[part.path.column]
            wanted = {"string": str, "int": int, "bool": bool}[part.type]
            if type(value) is not wanted or (isinstance(value, str) and not 0 < len(value) <= MAX_PART_CHARS):
                raise fail("keys", f"{part.path.column} must be {part.type} (got {value!r})")
            parts.append(value)
        keys.append(tuple(parts))
    if len(set(keys)) != len(keys):
        raise fail("keys", "a key is listed twice")
    return keys


def _count(table: Mapping[str, Any], key: str, default: int | None, fail: Any, low: int = 1) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_WINDOWS:
        raise fail(key, f"expected a whole number of windows from {low} to {MAX_WINDOWS} (got {value!r})")
    return value
