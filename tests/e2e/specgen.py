"""The reference of a spec's run in plain Python, for generators that know what each record should count
as (tests/e2e/specref.py for the IoT spec, tests/e2e/clickref.py for the clickstream one), in the three
phases of groundtruth.py: on time; late once the frontier has settled; sentinels.

A generator's record is a `Sent`: the record as produced and its `Outcome`, written from the generator's
intent, never by asking the pipeline's judge. The reference reads each aggregation's windows and Redis
output from the spec's text (aggregations/spec.py parses it: the test is of the pipeline, not of the
TOML parser). Values are multiples of 0.25, so every float sum is exact in any order.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import groundtruth as gt
import orjson

from aggregations.spec import Spec
from formats.aggregates import AggregateRow, MeasureStats

WINDOWS = {name: (size, step) for name, size, step in gt.WINDOWS}
PARTITIONS = gt.PARTITIONS
SENTINEL_MS = gt.SENTINEL_MS

RowKey = tuple[str, str, int, tuple[Any, ...]]  # aggregation, window, start, key
Key = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Counted:
    """What one aggregation takes of a record."""

    aggregation: str
    key: Key
    measures: tuple[float | None, ...]  # None: left out
    distinct: Key = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a record counts as: its event time (None: a dead letter for all), what each aggregation that
    counts it takes, and its dead-letter reason (the first rejecting aggregation's, or the record's)."""

    event_ms: int | None
    counted: tuple[Counted, ...] = ()
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    record: gt.Produced
    outcome: Outcome


def frontier_after(sent: list[Sent]) -> int:
    """The frontier once every record of `sent` is read: min over partitions of the latest event time
    of a record with a good time, minus the lateness."""
    return min(max(s.outcome.event_ms for s in sent if s.record.partition == p and s.outcome.event_ms is not None)
               for p in range(PARTITIONS)) - gt.LATENESS_MS


def _windows(event_ms: int, names: tuple[str, ...]) -> list[tuple[str, int, int]]:
    found = []
    for name in names:
        size, step = WINDOWS[name]
        start = event_ms - event_ms % step
        while start > event_ms - size:
            found.append((name, start, start + size))
            start -= step
    return found


@dataclass(frozen=True, slots=True)
class Expected:
    rows: dict[RowKey, AggregateRow]  # every closed window of phases 1 and 2
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]]  # (partition, offset) -> missed windows
    dead: list[tuple[int, int, bytes, str]]  # (partition, offset, original, reason)
    archived: dict[tuple[int, int], bytes]  # every record with a good time, as written


def reference(spec: Spec, on_time: list[tuple[Sent, int]], late_phase: list[tuple[Sent, int]], frontier_ms: int,
              sentinels: list[tuple[Sent, int]]) -> Expected:
    """The outputs of phases 1 and 2 (each record with its offset) and the sentinels: phase 1 counts in
    every window; a phase-2 record misses each window that ended at or before `frontier_ms`."""
    windows = {a.name: a.windows for a in spec.aggregations}
    cells: dict[RowKey, list[list[float]]] = {}
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
    dead, archived = [], {}
    for phase, records in ((1, on_time), (2, late_phase)):
        for s, offset in records:
            outcome, position = s.outcome, (s.record.partition, offset)
            if outcome.reason is not None:
                dead.append((*position, s.record.value, outcome.reason))
            if outcome.event_ms is None:
                continue
            archived[position] = s.record.value
            missed = []
            for counted in outcome.counted:
                for window, start, end in _windows(outcome.event_ms, windows[counted.aggregation]):
                    if phase == 2 and end <= frontier_ms:
                        missed.append((f"{counted.aggregation}/{window}", start))
                        continue
                    values = cells.setdefault((counted.aggregation, window, start, counted.key),
                                              [[] for _ in counted.measures])
                    for m, value in enumerate(counted.measures):
                        if value is not None:
                            values[m].append(value)
            if missed:
                late[position] = tuple(missed)
    for s, offset in sentinels:
        archived[(s.record.partition, offset)] = s.record.value
    rows = {}
    for (aggregation, window, start, key), values in cells.items():
        rows[(aggregation, window, start, key)] = AggregateRow(
            aggregation, window, start, start + WINDOWS[window][0], key,
            tuple(MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in values))
    return Expected(rows, late, dead, archived)


def redis_expected(spec: Spec, rows: dict[RowKey, AggregateRow], latest_n: int
                   ) -> dict[tuple[str, str, Key], list[AggregateRow]]:
    """Per (aggregation, window, key): the rows its Redis index holds, newest first (none for `off`)."""
    outputs = {a.name: a.redis for a in spec.aggregations}
    by_key: dict[tuple[str, str, Key], list[AggregateRow]] = defaultdict(list)
    for (aggregation, window, _start, key), row in sorted(rows.items(), key=lambda item: -item[0][2]):
        if outputs[aggregation] != "off":
            by_key[(aggregation, window, key)].append(row)
    return {k: v[:1] if outputs[k[0]] == "latest" else v[:latest_n] for k, v in by_key.items()}


def _largest(row: AggregateRow | None) -> int:
    return 0 if row is None else max((m.count for m in row.measures if m is not None), default=0)


def restated(speed: dict[RowKey, AggregateRow], full: dict[RowKey, AggregateRow]) -> dict[RowKey, AggregateRow]:
    """The rows after the batch layer's restatement (docs/your-own-events.md): a row whose statistics the
    late records changed, or that the speed layer never wrote, has revision 1 and late_count its largest
    measure count's growth; the others are the speed layer's."""
    found = {}
    for key, row in full.items():
        old = speed.get(key)
        found[key] = old if old is not None and old.measures == row.measures else row._replace(
            revision=1, late_count=_largest(row) - _largest(old))
    return found


def _nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def rollups(spec: Spec, sent: list[Sent], periods: dict[str, int], before_ms: int
            ) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Per (aggregation, period kind, period start) the rollup rows of the records (a kind's length in
    `periods`), for the periods ending by `before_ms` (the sealed ones), rows by key (nulls first)."""
    aggregations = {a.name: a for a in spec.aggregations}
    groups: dict[tuple[str, str, int, Key], list[Counted]] = defaultdict(list)
    for s in sent:
        event_ms = s.outcome.event_ms
        if event_ms is None:
            continue
        for counted in s.outcome.counted:
            for kind, length in periods.items():
                start = event_ms - event_ms % length
                if start + length <= before_ms:
                    groups[(counted.aggregation, kind, start, counted.key)].append(counted)
    found: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for (name, kind, start, key), members in sorted(
            groups.items(), key=lambda item: (*item[0][:3], tuple((p is not None, p) for p in item[0][3]))):
        aggregation = aggregations[name]
        row: dict[str, Any] = {"period_start": start, "period_end": start + periods[kind], "period": kind}
        row.update({part.path.column: value for part, value in zip(aggregation.key, key, strict=True)})
        row["events"] = len(members)
        for m, measure in enumerate(aggregation.measures):
            values = [c.measures[m] for c in members if c.measures[m] is not None]
            stats: list[Any] = ([len(values), sum(values), min(values), max(values), sum(values) / len(values),
                                 *(_nearest_rank(values, p) for p in (50, 95, 99))] if values else [0] + [None] * 7)
            row.update({f"{measure.column}_{stat}": value for stat, value in zip(
                ("count", "sum", "min", "max", "mean", "p50", "p95", "p99"), stats, strict=True)})
        for d, field in enumerate(aggregation.distinct):
            row[f"{field.path.column}_distinct"] = len({c.distinct[d] for c in members if c.distinct[d] is not None})
        found[(name, kind, start)].append(row)
    return found


def open_rows(spec: Spec, sent: list[Sent]) -> dict[tuple[str, str, Key], list[AggregateRow]]:
    """Per (aggregation, window, key) the windows of `sent` (the sentinels: every window they are in is
    open at the end), oldest first."""
    windows = {a.name: a.windows for a in spec.aggregations}
    cells: dict[RowKey, list[list[float]]] = {}
    for s in sent:
        assert s.outcome.event_ms is not None
        for counted in s.outcome.counted:
            for window, start, _end in _windows(s.outcome.event_ms, windows[counted.aggregation]):
                values = cells.setdefault((counted.aggregation, window, start, counted.key),
                                          [[] for _ in counted.measures])
                for m, value in enumerate(counted.measures):
                    if value is not None:
                        values[m].append(value)
    found: dict[tuple[str, str, Key], list[AggregateRow]] = defaultdict(list)
    for (aggregation, window, start, key), values in sorted(cells.items(), key=lambda item: item[0][2]):
        found[(aggregation, window, key)].append(AggregateRow(
            aggregation, window, start, start + WINDOWS[window][0], key,
            tuple(MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in values)))
    return found


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    """A threshold rule of one aggregation's window and measure statistic, for every key, `for` and
    `resolve_for` 1: what the spec's end-to-end test sets in ALERT_RULES, and its reference below."""

    name: str
    aggregation: str
    window: str
    measure: str  # the measure's column
    statistic: str  # count, sum, mean, min or max
    op: str  # > or <
    threshold: float

    def toml(self) -> str:
        return (f'[[rule]]\nname = "{self.name}"\nkind = "threshold"\naggregation = "{self.aggregation}"\n'
                f'window = "{self.window}"\nmeasure = "{self.measure}.{self.statistic}"\nop = "{self.op}"\n'
                f"threshold = {self.threshold}\n")


def threshold_alerts(spec: Spec, rule: ThresholdRule, rows: dict[RowKey, AggregateRow], closed_until_ms: int
                     ) -> list[tuple[str, str, int, str, float]]:
    """(rule, key text, window start, state, value) of every alert the rule makes over the exported rows:
    per key, every window from its first row on that has closed by `closed_until_ms`, in order. A
    window without a row of the key, or whose row has no value of the measure, has count and sum 0 and
    no mean, min or max (not judged); a value beyond the threshold fires (when not firing), one within
    it resolves (docs/alert-rules.md)."""
    aggregation = next(a for a in spec.aggregations if a.name == rule.aggregation)
    index = [m.column for m in aggregation.measures].index(rule.measure)
    size, step = WINDOWS[rule.window]
    by_key: dict[Key, dict[int, AggregateRow]] = defaultdict(dict)
    for (name, window, start, key), row in rows.items():
        if (name, window) == (rule.aggregation, rule.window):
            by_key[key][start] = row
    found = []
    for key, key_rows in by_key.items():
        firing = False
        for start in range(min(key_rows), closed_until_ms - size + 1, step):
            row = key_rows.get(start)
            stats = None if row is None else row.measures[index]
            if stats is None:
                if rule.statistic not in ("count", "sum"):
                    continue
                value = 0.0
            else:
                value = stats.mean if rule.statistic == "mean" else float(getattr(stats, rule.statistic))
            beyond = value > rule.threshold if rule.op == ">" else value < rule.threshold
            if beyond != firing:
                firing = beyond
                found.append((rule.name, orjson.dumps(list(key)).decode(), start, "firing" if firing else "resolved",
                              value))
    return sorted(found)
