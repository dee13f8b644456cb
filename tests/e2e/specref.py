"""IoT readings for the shipped spec deploy/aggregations/iot.toml, and their reference results
(tests/e2e/specgen.py), in the three phases of groundtruth.py (on time; late once the frontier has
settled; sentinels).

Each reading is made from what it should count as (its `Outcome`): the generator knows, for every record,
which aggregations count it with which key and measures, or why it is a dead letter, without
asking the pipeline's judge. Devices and sites include hostile strings (paths, separators, long
non-ASCII text), so keys in Redis and the lake are exercised as data. Values are multiples of 0.25,
so every float sum is exact in any order.

    devices: key device.id, measures metrics.temp and metrics.hum (missing: left out), redis "latest"
    sites:   key device.site, measure metrics.temp (missing: left out), redis "every"
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import groundtruth as gt
import orjson
import specgen
from specgen import Counted, Expected, Outcome, RowKey, Sent, frontier_after, restated

from aggregations.spec import Spec, parse_spec
from formats.aggregates import AggregateRow
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

# (path, status, a piece of the message) of the web API's refusals for this spec.
API_ERRORS = [
    ("/v1/aggregations/rooms/tumbling_1m/closed?room=1", 404, "unknown aggregation 'rooms'"),
    ("/v1/aggregations/devices/daily/closed?device_id=d-1", 404, "keeps no window 'daily'"),
    ("/v1/aggregations/sites/tumbling_1m/closed?device_id=d-1", 400, "device_site is required"),
]

# Threshold rules the end-to-end test sets (ALERT_RULES), with their reference in specgen.
ALERT_RULES = (specgen.ThresholdRule("hot_device", "devices", "tumbling_1m", "metrics_temp", "max", ">", 20.0),
               specgen.ThresholdRule("dry_site", "sites", "hopping_1m", "metrics_temp", "mean", "<", 2.5))

__all__ = ["ALERT_RULES", "API_ERRORS", "Expected", "RowKey", "Sent", "frontier_after", "phase1", "phase2",
           "redis_expected", "reference", "restated", "rollups", "sentinels", "spec", "warmup",
           "with_oversized_record"]


def spec() -> Spec:
    return parse_spec(SPEC_PATH.read_text(encoding="utf-8"), list(WINDOWS))


def _outcome(event_ms: int | None, device: str | None, site: str | None, temp: float | None, hum: float | None,
             reason: str | None = None) -> Outcome:
    """devices counts it with (device,) and (temp, hum) unless device is None; sites with (site,) and (temp,)
    unless site is None."""
    counted = []
    if device is not None:
        counted.append(Counted("devices", (device,), (temp, hum)))
    if site is not None:
        counted.append(Counted("sites", (site,), (temp,)))
    return Outcome(event_ms, tuple(counted), reason)


def _dead(reason: str) -> Outcome:
    return Outcome(None, (), reason)


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
    return Sent(_record(partition, body), _outcome(event_ms, device, site, temp, hum))


def defective(partition: int, event_ms: int, rng: random.Random, which: int) -> Sent:
    """A record that one aggregation or both reject, or that is a dead letter as a whole; `which`
    chooses the defect."""
    device, site = rng.choice(DEVICES), rng.choice(SITES)
    temp, hum = rng.randrange(-80, 120) / 4, rng.randrange(0, 400) / 4
    time = iso_utc(event_ms)
    good = {"device": {"id": device, "site": site}, "metrics": {"temp": temp, "hum": hum}, "time": time}
    cases: list[tuple[Any, Outcome]] = [
        (b"{not json", _dead(INVALID_JSON)),
        (b"[1, 2]", _dead(NOT_AN_OBJECT)),
        ({**good, "time": None}, _dead(MISSING_FIELD)),
        ({**good, "time": "yesterday"}, _dead(BAD_TIMESTAMP)),
        ({**good, "time": iso_utc(SENTINEL_MS + 400 * 86_400_000)}, _dead(TIMESTAMP_OUT_OF_RANGE)),
        # Rejected by devices, counted in sites.
        ({**good, "device": {"id": 17, "site": site}}, _outcome(event_ms, None, site, temp, None, WRONG_TYPE)),
        ({**good, "device": {"id": "", "site": site}}, _outcome(event_ms, None, site, temp, None, BAD_STRING)),
        ({**good, "device": {"site": site}}, _outcome(event_ms, None, site, temp, None, MISSING_FIELD)),
        ({**good, "metrics": {"temp": temp, "hum": True}}, _outcome(event_ms, None, site, temp, None, WRONG_TYPE)),
        # Rejected by sites, counted in devices.
        ({**good, "device": {"id": device}}, _outcome(event_ms, device, None, temp, hum, MISSING_FIELD)),
        ({**good, "device": {"id": device, "site": "a\nb"}}, _outcome(event_ms, device, None, temp, hum, BAD_STRING)),
        # Rejected by both: a dead letter with the first aggregation's reason, still archived.
        ({**good, "metrics": {"temp": "hot", "hum": hum}}, _outcome(event_ms, None, None, None, None, WRONG_TYPE)),
    ]
    body, expected = cases[which % len(cases)]
    return Sent(_record(partition, body), expected)


def warmup(seed: int) -> list[Sent]:
    """Phase 0: one good record per partition ten minutes before phase 1. Once the frontier is its low
    watermark, stage 2 knows the low watermark it starts judging alert rules from exactly (every window
    of the phases after it is judged), as in tests/e2e/test_alerts.py."""
    rng = random.Random(seed)
    return [reading(partition, BASE_MS - 600_000 + partition * 1_000, rng) for partition in range(PARTITIONS)]


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
    big = Sent(gt.Produced(rng.randrange(PARTITIONS), b"bad", body), _dead(OVERSIZED))
    return [*sent[:index], big, *sent[index:]]


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
                            "time": iso_utc(SENTINEL_MS)}), _outcome(SENTINEL_MS, "sentinel", "sentinel", 0.0, None))
            for p in range(PARTITIONS)]


def reference(on_time: list[tuple[Sent, int]], late_phase: list[tuple[Sent, int]], frontier_ms: int,
              sentinel_offsets: list[int]) -> Expected:
    """specgen.reference of the IoT spec."""
    return specgen.reference(spec(), on_time, late_phase, frontier_ms,
                             list(zip(sentinels(), sentinel_offsets, strict=True)))


def redis_expected(rows: dict[RowKey, AggregateRow], latest_n: int
                   ) -> dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]]:
    return specgen.redis_expected(spec(), rows, latest_n)


def rollups(sent: list[Sent], periods: dict[str, int], before_ms: int
            ) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    return specgen.rollups(spec(), sent, periods, before_ms)
