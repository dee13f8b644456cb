"""IoT readings for the shipped spec deploy/aggregations/iot.toml, and their reference results in plain
Python, in the three phases of groundtruth.py (on time; late once the frontier has settled; sentinels).

Each reading is made from what it should count as (a `Reading`): the generator knows, for every record,
which aggregations count it with which key and measures, or why it is a dead letter, without
asking the pipeline's judge. Devices and sites include hostile strings (paths, separators, long
non-ASCII text), so keys in Redis and the lake are exercised as data. Values are multiples of 0.25,
so every float sum is exact in any order.

    devices: key device.id, measures metrics.temp and metrics.hum (missing: left out), redis "latest"
    sites:   key device.site, measure metrics.temp (missing: left out), redis "every"
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import groundtruth as gt
import orjson

from aggregations.spec import Spec, parse_spec
from formats.aggregates import AggregateRow, MeasureStats
from formats.events import (
    BAD_STRING,
    BAD_TIMESTAMP,
    INVALID_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    OVERSIZED,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    iso_utc,
)

SPEC_PATH = Path(__file__).resolve().parents[2] / "deploy" / "aggregations" / "iot.toml"
WINDOWS = {name: (size, step) for name, size, step in gt.WINDOWS}
PARTITIONS = gt.PARTITIONS
BASE_MS = gt.BASE_MS  # phase 1 crosses an hour boundary
SENTINEL_MS = gt.SENTINEL_MS
DEVICES = ("d-1", "d-2", "d-3", "../../etc/passwd", "a:b*c?[]{}|z", "ü" * 40, "d=1/x")
SITES = ("berlin", "paris", "../=x/é", "agg:x:y")
REDIS_OUTPUT = {"devices": "latest", "sites": "every"}

RowKey = tuple[str, str, int, tuple[Any, ...]]  # aggregation, window, start, key


def spec() -> Spec:
    return parse_spec(SPEC_PATH.read_text(encoding="utf-8"), list(WINDOWS))


@dataclass(frozen=True, slots=True)
class Reading:
    """What a record counts as: its event time (None: a dead letter for all), the key of each aggregation
    that counts it (None: not counted), each measure (None: left out), and its dead-letter reason."""

    event_ms: int | None
    device: str | None  # the devices aggregation's key
    site: str | None  # the sites aggregation's key
    temp: float | None
    hum: float | None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Sent:
    record: gt.Produced
    reading: Reading


def _record(partition: int, body: Any) -> gt.Produced:
    return gt.Produced(partition, b"k", body if isinstance(body, bytes) else orjson.dumps(body))


def _time(event_ms: int, rng: random.Random) -> str:
    """ISO-8601 in UTC or at +01:00, the same instant."""
    if rng.random() < 0.5:
        return iso_utc(event_ms)
    moment = datetime.fromtimestamp(event_ms / 1000, tz=timezone.utc).astimezone(timezone(timedelta(hours=1)))
    return moment.isoformat(timespec="milliseconds")


def reading(partition: int, event_ms: int, rng: random.Random) -> Sent:
    """A good reading, sometimes without one of its measures, sometimes from a device without a
    thermometer (windows where a measure has no value)."""
    device, site = rng.choice(DEVICES), rng.choice(SITES)
    temp: float | None = rng.randrange(-80, 120) / 4
    hum: float | None = rng.randrange(0, 400) / 4
    if rng.random() < 0.1:
        temp, hum = (None, hum) if rng.random() < 0.5 else (temp, None)
    if rng.random() < 0.02:
        device, temp = "d-hum", None
    metrics = {name: value for name, value in (("temp", temp), ("hum", hum)) if value is not None}
    body = {"device": {"id": device, "site": site}, "metrics": metrics, "time": _time(event_ms, rng)}
    return Sent(_record(partition, body), Reading(event_ms, device, site, temp, hum))


def defective(partition: int, event_ms: int, rng: random.Random, which: int) -> Sent:
    """A record that one aggregation or both reject, or that is a dead letter as a whole; `which`
    chooses the defect."""
    device, site = rng.choice(DEVICES), rng.choice(SITES)
    temp, hum = rng.randrange(-80, 120) / 4, rng.randrange(0, 400) / 4
    time = iso_utc(event_ms)
    good = {"device": {"id": device, "site": site}, "metrics": {"temp": temp, "hum": hum}, "time": time}
    cases: list[tuple[Any, Reading]] = [
        (b"{not json", Reading(None, None, None, None, None, INVALID_JSON)),
        (b"[1, 2]", Reading(None, None, None, None, None, NOT_AN_OBJECT)),
        ({**good, "time": None}, Reading(None, None, None, None, None, MISSING_FIELD)),
        ({**good, "time": "yesterday"}, Reading(None, None, None, None, None, BAD_TIMESTAMP)),
        ({**good, "time": iso_utc(SENTINEL_MS + 400 * 86_400_000)},
         Reading(None, None, None, None, None, TIMESTAMP_OUT_OF_RANGE)),
        # Rejected by devices, counted in sites.
        ({**good, "device": {"id": 17, "site": site}}, Reading(event_ms, None, site, temp, None, WRONG_TYPE)),
        ({**good, "device": {"id": "", "site": site}}, Reading(event_ms, None, site, temp, None, BAD_STRING)),
        ({**good, "device": {"site": site}}, Reading(event_ms, None, site, temp, None, MISSING_FIELD)),
        ({**good, "metrics": {"temp": temp, "hum": True}}, Reading(event_ms, None, site, temp, None, WRONG_TYPE)),
        # Rejected by sites, counted in devices.
        ({**good, "device": {"id": device}}, Reading(event_ms, device, None, temp, hum, MISSING_FIELD)),
        ({**good, "device": {"id": device, "site": "a\nb"}}, Reading(event_ms, device, None, temp, hum, BAD_STRING)),
        # Rejected by both: a dead letter with the first aggregation's reason, still archived.
        ({**good, "metrics": {"temp": "hot", "hum": hum}}, Reading(event_ms, None, None, None, None, WRONG_TYPE)),
    ]
    body, expected = cases[which % len(cases)]
    return Sent(_record(partition, body), expected)


def phase1(per_partition: int, seed: int) -> list[Sent]:
    """On time: per partition in event-time order, disorder below the lateness (10 s), a defective
    record every 13th."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    for i in range(per_partition):
        for partition in range(PARTITIONS):
            event_ms = BASE_MS + i * (600_000 // per_partition) + partition * 13 - rng.choice((0, 0, 2_000, 7_000))
            if i % 13 == 5:
                sent.append(defective(partition, event_ms, rng, i // 13 + partition))
            else:
                sent.append(reading(partition, event_ms, rng))
    return sent


def with_oversized_record(sent: list[Sent], seed: int) -> list[Sent]:
    """The same records with one 2 MB reading (a dead letter as oversized) at a position chosen by seed."""
    rng = random.Random(seed)
    index = rng.randrange(len(sent))
    body = orjson.dumps({"device": {"id": "d-1", "site": "berlin"}, "metrics": {"temp": 1.0},
                         "time": iso_utc(BASE_MS)}) + b" " * gt.OVERSIZED_BYTES
    big = Sent(gt.Produced(rng.randrange(PARTITIONS), b"bad", body), Reading(None, None, None, None, None, OVERSIZED))
    return [*sent[:index], big, *sent[index:]]


def frontier_after(sent: list[Sent]) -> int:
    """The frontier once every record of `sent` is read: min over partitions of the latest event time
    of a record with a good time, minus the lateness."""
    return min(max(s.reading.event_ms for s in sent if s.record.partition == p and s.reading.event_ms is not None)
               for p in range(PARTITIONS)) - gt.LATENESS_MS


def phase2(frontier_ms: int, seed: int) -> list[Sent]:
    """Readings wholly late, partly late and on time, none raising a partition's maximum, and one
    defective record per partition."""
    rng = random.Random(seed)
    sent = []
    for partition in range(PARTITIONS):
        for offset_ms in (-50_000, -40_000, -31_000, -29_000, -5_000, -125_000, -86_400_000, 5_000, 9_000):
            sent.append(reading(partition, frontier_ms + offset_ms, rng))
        sent.append(defective(partition, frontier_ms - 45_000, rng, rng.randrange(12)))
    return sent


def sentinels() -> list[Sent]:
    """One reading per partition two hours ahead: it closes every window of phases 1 and 2."""
    return [Sent(_record(p, {"device": {"id": "sentinel", "site": "sentinel"}, "metrics": {"temp": 0},
                            "time": iso_utc(SENTINEL_MS)}), Reading(SENTINEL_MS, "sentinel", "sentinel", 0.0, None))
            for p in range(PARTITIONS)]


def _windows(event_ms: int) -> list[tuple[str, int, int]]:
    found = []
    for name, (size, step) in WINDOWS.items():
        start = event_ms - event_ms % step
        while start > event_ms - size:
            found.append((name, start, start + size))
            start -= step
    return found


def _counted(r: Reading) -> list[tuple[str, Any, tuple[float | None, ...]]]:
    counted = []
    if r.device is not None:
        counted.append(("devices", r.device, (r.temp, r.hum)))
    if r.site is not None:
        counted.append(("sites", r.site, (r.temp,)))
    return counted


@dataclass(frozen=True, slots=True)
class Expected:
    rows: dict[RowKey, AggregateRow]  # every closed window of phases 1 and 2
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]]  # (partition, offset) -> missed windows
    dead: list[tuple[int, int, bytes, str]]  # (partition, offset, original, reason)
    archived: dict[tuple[int, int], bytes]  # every record with a good time, as written


def reference(on_time: list[tuple[Sent, int]], late_phase: list[tuple[Sent, int]], frontier_ms: int,
              sentinel_offsets: list[int]) -> Expected:
    """The outputs of phases 1 and 2 (each record with its offset) and the sentinels: phase 1 counts in
    every window; a phase-2 record misses each window that ended at or before `frontier_ms`."""
    cells: dict[RowKey, list[list[float]]] = {}
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
    dead, archived = [], {}
    for phase, records in ((1, on_time), (2, late_phase)):
        for s, offset in records:
            r, position = s.reading, (s.record.partition, offset)
            if r.reason is not None:
                dead.append((*position, s.record.value, r.reason))
            if r.event_ms is None:
                continue
            archived[position] = s.record.value
            missed = []
            for aggregation, key, measures in _counted(r):
                for window, start, end in _windows(r.event_ms):
                    if phase == 2 and end <= frontier_ms:
                        missed.append((f"{aggregation}/{window}", start))
                        continue
                    values = cells.setdefault((aggregation, window, start, (key,)), [[] for _ in measures])
                    for m, value in enumerate(measures):
                        if value is not None:
                            values[m].append(value)
            if missed:
                late[position] = tuple(missed)
    for s, offset in zip(sentinels(), sentinel_offsets, strict=True):
        archived[(s.record.partition, offset)] = s.record.value
    rows = {}
    for (aggregation, window, start, key), values in cells.items():
        rows[(aggregation, window, start, key)] = AggregateRow(
            aggregation, window, start, start + WINDOWS[window][0], key,
            tuple(MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in values))
    return Expected(rows, late, dead, archived)


def redis_expected(rows: dict[RowKey, AggregateRow], latest_n: int
                   ) -> dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]]:
    """Per (aggregation, window, key): the rows its Redis index holds, newest first."""
    by_key: dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]] = defaultdict(list)
    for (aggregation, window, _start, key), row in sorted(rows.items(), key=lambda item: -item[0][2]):
        by_key[(aggregation, window, key)].append(row)
    return {k: v[:1] if REDIS_OUTPUT[k[0]] == "latest" else v[:latest_n] for k, v in by_key.items()}


def _largest(row: AggregateRow | None) -> int:
    return 0 if row is None else max((m.count for m in row.measures if m is not None), default=0)


def restated(speed: dict[RowKey, AggregateRow], full: dict[RowKey, AggregateRow]) -> dict[RowKey, AggregateRow]:
    """The rows after the batch layer's restatement (README, Your own events): a row whose statistics the
    late readings changed, or that the speed layer never wrote, has revision 1 and late_count its largest
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


MEASURE_COLUMNS = {"devices": ("metrics_temp", "metrics_hum"), "sites": ("metrics_temp",)}
KEY_COLUMNS = {"devices": "device_id", "sites": "device_site"}


def rollups(sent: list[Sent], periods: dict[str, int], before_ms: int
            ) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Per (aggregation, period kind, period start) the rollup rows of the readings (a kind's length in
    `periods`), for the periods ending by `before_ms` (the sealed ones), rows by key."""
    groups: dict[tuple[str, str, int, Any], list[tuple[float | None, ...]]] = defaultdict(list)
    for s in sent:
        if s.reading.event_ms is None:
            continue
        for aggregation, key, measures in _counted(s.reading):
            for kind, length in periods.items():
                start = s.reading.event_ms - s.reading.event_ms % length
                if start + length <= before_ms:
                    groups[(aggregation, kind, start, key)].append(measures)
    found: dict[tuple[str, str, int], list[dict[str, Any]]] = defaultdict(list)
    for (aggregation, kind, start, key), events in sorted(groups.items(), key=lambda item: item[0]):
        row: dict[str, Any] = {"period_start": start, "period_end": start + periods[kind], "period": kind,
                               KEY_COLUMNS[aggregation]: key, "events": len(events)}
        for m, column in enumerate(MEASURE_COLUMNS[aggregation]):
            values = [e[m] for e in events if e[m] is not None]
            stats: list[Any] = ([len(values), sum(values), min(values), max(values), sum(values) / len(values),
                                 *(_nearest_rank(values, p) for p in (50, 95, 99))] if values else [0] + [None] * 7)
            row.update({f"{column}_{name}": value for name, value in zip(
                ("count", "sum", "min", "max", "mean", "p50", "p95", "p99"), stats, strict=True)})
        found[(aggregation, kind, start)].append(row)
    return found
