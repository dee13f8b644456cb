"""The rule engine: alert rules evaluated over closed windows, one window at a time. Pure: no I/O,
no clock; the caller passes each closed window's rows, in event-time order, and keeps the state.

Per (rule, event type) a `Track` holds what the rule needs across windows: the run of breaching
windows (`for`), the run of normal ones while firing (`resolve_for`), whether it fires, and the
trailing values (anomaly: the last N; change: the previous one). A window's judgement depends only
on that state and the window's final rows, so evaluating the same windows again from a restored
state gives the same alerts: that is what makes a replay after a crash exact.

What a window says about a type:
- a row: count, sum, mean, min and max are its values;
- no row: count and sum are 0, mean, min and max have no value;
- a value that cannot be judged (no value, a change against 0 or no previous value, an anomaly
  before N trailing values or against a constant history) leaves the track as it is.

Which types a rule watches: the ones it lists, in every closed window; a rule that lists none
watches every type from its first row on, and forgets a type (its state) once it has had no row for
`FORGET_AFTER` windows while not firing. Absence rules must list their types (alerts/rules.py).

A rule of a spec's aggregation (its `measure_index` set) judges keys as types: the rows are the
aggregation's (formats.aggregates.AggregateRow, by key text), and what it observes of a row is its
measure's statistics (no value of the measure: as no row). An absence rule of one sees only whether
the key has a row.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Final, NamedTuple, Protocol

from alerts.rules import Rule
from formats.alerts import Alert, Track
from formats.keys import decode_key_part, encode_key_part

FORGET_AFTER: Final = 10
FIRING: Final = "firing"
RESOLVED: Final = "resolved"
_OPS: Final[dict[str, Callable[[float, float], bool]]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le}


class Observed(Protocol):
    """What the engine reads of a window row (formats.rows.WindowRow is one)."""

    @property
    def count(self) -> int: ...
    @property
    def sum(self) -> float: ...
    @property
    def min(self) -> float: ...
    @property
    def max(self) -> float: ...


def alert_id(rule: str, event_type: str, window_start_ms: int, state: str) -> str:
    """Deterministic, and safe as a Redis member or field: rule names have no ':', types are encoded."""
    return f"{rule}:{encode_key_part(event_type)}:{window_start_ms}:{state}"


def track_key(rule: str, event_type: str) -> str:
    return f"{rule}:{encode_key_part(event_type)}"


def parse_track_key(key: str) -> tuple[str, str]:
    """(rule, event_type) of a track_key."""
    rule, _, event_type = key.partition(":")
    return rule, decode_key_part(event_type)


def measure_of(row: Observed | None, measure: str) -> float | None:
    if row is None:
        return 0.0 if measure in ("count", "sum") else None
    if measure == "mean":
        return row.sum / row.count
    return float(getattr(row, measure))


def quiet_limit(rules: Sequence[Rule]) -> int:
    """Windows without any row after which no track of these rules changes any more (the caller may
    skip the rest of a quiet stretch): counters, histories and idle counts have all saturated."""
    return max((r.for_windows + r.resolve_windows + r.trailing for r in rules), default=0) + FORGET_AFTER + 2


def judge(rule: Rule, track: Track, row: Observed | None) -> float | None:
    """The value the rule compares with its threshold (None: no judgement); updates the history."""
    current = measure_of(row, rule.measure)
    if rule.kind == "threshold":
        return current
    if rule.kind == "absence":
        return 0.0 if row is None else float(row.count)
    if rule.kind == "change":
        previous = track.history[0] if track.history else None
        track.history = [] if current is None else [current]
        return None if current is None or not previous else current / previous
    # anomaly: z-score against the trailing windows, then this one joins them
    value = None
    history = track.history
    if current is not None and len(history) == rule.trailing:
        mean = math.fsum(history) / len(history)
        deviation = math.sqrt(math.fsum((x - mean) ** 2 for x in history) / len(history))
        value = (current - mean) / deviation if deviation > 0 else None
    if current is not None:
        track.history = [*history, current][-rule.trailing:]
    return value


def breaches(rule: Rule, value: float, row: Observed | None) -> bool:
    if rule.kind == "absence":
        return row is None
    return _OPS[rule.op](value, rule.threshold)


def step(rule: Rule, track: Track, row: Observed | None) -> tuple[str | None, float | None]:
    """One closed window for one track: the alert state it enters (or None) and the value judged."""
    value = judge(rule, track, row)
    track.idle = 0 if row is not None else min(track.idle + 1, FORGET_AFTER)
    if value is None:
        return None, None
    if breaches(rule, value, row):
        track.normal = 0
        track.breaching = min(track.breaching + 1, rule.for_windows)
        if not track.firing and track.breaching >= rule.for_windows:
            track.firing = True
            return FIRING, value
        return None, value
    track.breaching = 0
    if track.firing:
        track.normal = min(track.normal + 1, rule.resolve_windows)
        if track.normal >= rule.resolve_windows:
            track.firing, track.normal = False, 0
            return RESOLVED, value
    return None, value


class _Seen(NamedTuple):
    """A spec's row as an absence rule observes it: present, with its largest measure count."""

    count: int
    sum: float = 0.0
    min: float = 0.0
    max: float = 0.0


def observed(rule: Rule, row: object | None) -> Observed | None:
    """What a rule observes of a window's row of one type or key (see the module doc)."""
    if row is None or rule.aggregation is None:
        return row  # type: ignore[return-value]
    measures = row.measures  # type: ignore[attr-defined]
    if rule.measure_index is None:
        return _Seen(max((m.count for m in measures if m is not None), default=0))
    return measures[rule.measure_index]  # type: ignore[no-any-return]


def evaluate_window(rules: Sequence[Rule], tracks: dict[str, Track], window: str, start_ms: int, end_ms: int,
                    rows: Mapping[str, object], owns: Callable[[str], bool] = lambda _: True
                    ) -> tuple[list[Alert], set[str]]:
    """Every rule of `window` over one closed window; mutates `tracks` (keyed by track_key).

    `owns` says which listed types are judged here: each stage-2 partition judges the types routed
    to it (formats.partials.partial_partition), so a listed type is judged once, not on every partition.

    Returns the alerts, rule by rule in file order and types in sorted order, and the keys of
    the tracks that changed (created, updated or forgotten)."""
    alerts: list[Alert] = []
    changed: set[str] = set()
    for rule in rules:
        if rule.window != window:
            continue
        if rule.event_types:
            types = {t for t in rule.event_types if owns(t)}
        else:
            prefix = f"{rule.name}:"
            types = set(rows) | set(_tracked_types(tracks, prefix))
        for event_type in sorted(types):
            key = track_key(rule.name, event_type)
            before = tracks.get(key)
            track = Track() if before is None else Track(before.breaching, before.normal, before.firing,
                                                         list(before.history), before.idle)
            row = observed(rule, rows.get(event_type))
            state, value = step(rule, track, row)
            if state is not None and value is not None:
                alerts.append(Alert(alert_id(rule.name, event_type, start_ms, state), rule.name, rule.kind,
                                    rule.severity, state, event_type, window, start_ms, end_ms, value,
                                    rule.threshold, rule.labels))
            if not rule.event_types and track.idle >= FORGET_AFTER and not track.firing:
                if before is not None:
                    del tracks[key]
                    changed.add(key)
            elif track != before:
                tracks[key] = track
                changed.add(key)
    return alerts, changed


def _tracked_types(tracks: Mapping[str, Track], prefix: str) -> list[str]:
    return [decode_key_part(key[len(prefix):]) for key in tracks if key.startswith(prefix)]
