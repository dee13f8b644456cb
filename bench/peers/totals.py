"""The peers' check: window totals computed from the generated events, against what a peer reported.

The reference is computed here on purpose rather than through tables/windows.py: it checks the
peers' windows with plain arithmetic (windows aligned to the epoch, half-open [start, start + 60 s)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from bench.peers.job import SENTINEL_TYPE, SIZE_MS, WINDOW_STEPS_MS, WindowRow

Key = tuple[str, int, str]  # window, start_ms, event_type

# Sums and means depend on the order values are added in, which differs between engines.
REL_TOLERANCE = 1e-9


class Totals(NamedTuple):
    count: int
    sum: float
    min: float
    max: float


def window_starts(event_ms: int, step_ms: int, size_ms: int = SIZE_MS) -> range:
    """Starts of the epoch-aligned windows of `size_ms` every `step_ms` that contain `event_ms`."""
    last = event_ms - event_ms % step_ms
    return range(last - size_ms + step_ms, last + 1, step_ms)


def reference(values: Iterable[bytes]) -> dict[Key, Totals]:
    """The exact totals of every window of the JSON events in `values` (sentinels left out)."""
    grouped: dict[Key, list[float]] = {}
    for value in values:
        event = orjson.loads(value)
        if event["event_type"] == SENTINEL_TYPE:
            continue
        for window, step_ms in WINDOW_STEPS_MS.items():
            for start in window_starts(event["timestamp"], step_ms):
                grouped.setdefault((window, start, event["event_type"]), []).append(event["value"])
    return {key: Totals(len(vs), math.fsum(vs), min(vs), max(vs)) for key, vs in grouped.items()}


@dataclass(frozen=True)
class Check:
    """How a peer's closed windows compare with the reference."""

    windows: int  # windows in the reference
    matching: int  # windows reported with exactly the reference's totals
    missing: int  # reference windows not reported
    wrong: list[Key] = field(default_factory=list)  # reported with other totals, or not in the reference
    dropped: dict[str, int] = field(default_factory=dict)  # per window kind: event memberships not counted

    @property
    def exact(self) -> bool:
        return self.matching == self.windows and not self.wrong

    def summary(self) -> str:
        if self.exact:
            return f"exact ({self.windows} windows)"
        return f"{self.matching}/{self.windows} windows exact, {self.missing} missing, {len(self.wrong)} wrong"


def _same(expected: Totals, row: WindowRow) -> bool:
    return (row.count == expected.count and row.min == expected.min and row.max == expected.max
            and math.isclose(row.sum, expected.sum, rel_tol=REL_TOLERANCE)
            and math.isclose(row.mean, expected.sum / expected.count, rel_tol=REL_TOLERANCE))


def check(expected: dict[Key, Totals], rows: Iterable[WindowRow]) -> Check:
    """Compare `rows` with `expected`: counts, min and max exactly, sum and mean to REL_TOLERANCE.

    `dropped` counts, per window kind, the events the reported counts fall short of the reference
    (a tumbling window holds each event once, the hopping windows twice).
    """
    reported: dict[Key, WindowRow] = {}
    wrong: list[Key] = []
    for row in rows:
        key = (row.window, row.start_ms, row.event_type)
        if key in reported or key not in expected:  # a window emitted twice, or one that should not exist
            wrong.append(key)
        reported[key] = row
    dropped = dict.fromkeys(WINDOW_STEPS_MS, 0)
    matching = missing = 0
    for key, totals in expected.items():
        row = reported.get(key)
        if row is None:
            missing += 1
            dropped[key[0]] += totals.count
        elif _same(totals, row):
            matching += 1
        else:
            wrong.append(key)
            dropped[key[0]] += max(0, totals.count - row.count)
    return Check(len(expected), matching, missing, sorted(set(wrong)), dropped)
