"""Clickstream events for the shipped spec deploy/aggregations/clickstream.toml, and their reference
results (tests/e2e/specgen.py), in the three phases of groundtruth.py. The same interface as
tests/e2e/specref.py (the IoT spec's), so that one end-to-end test runs both.

Each click is made from what it should count as (its `Outcome`), by the spec's text:

    page_views: key page.path and country (a missing one: a null part), measure ms_on_page (missing: left
                out), distinct uid; Redis: the latest window per key
    users:      key uid (missing: a dead letter for it), measure ms_on_page (left out), tumbling_1m only;
                Redis off
    checkout:   only /cart, /checkout and /payment; key page.path, measure ms_on_page (missing: a dead
                letter for it); Redis: every window

Paths, countries and users include hostile strings; "/no-time" never has a time on page, so its windows
have a measure without values. Times are epoch seconds with milliseconds (a float) or whole (an int).
"""

from __future__ import annotations

import random
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
    INVALID_JSON,
    MISSING_FIELD,
    NOT_AN_OBJECT,
    OVERSIZED,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
)

# Threshold rules the end-to-end test sets (ALERT_RULES), with their reference in specgen.
ALERT_RULES = (specgen.ThresholdRule("slow_checkout", "checkout", "tumbling_1m", "ms_on_page", "mean", ">",
                                     6000.0),
               specgen.ThresholdRule("busy_page", "page_views", "hopping_1m", "ms_on_page", "count", ">", 3.0))

__all__ = ["ALERT_RULES", "API_ERRORS", "SPEC_PATH", "Expected", "RowKey", "Sent", "frontier_after",
           "phase1", "phase2", "redis_expected", "reference", "restated", "rollups", "sentinels", "spec",
           "warmup", "with_oversized_record"]

SPEC_PATH = Path(__file__).resolve().parents[2] / "deploy" / "aggregations" / "clickstream.toml"
WINDOWS = {name: (size, step) for name, size, step in gt.WINDOWS}
PARTITIONS = gt.PARTITIONS
BASE_MS = gt.BASE_MS
SENTINEL_MS = gt.SENTINEL_MS
CHECKOUT = ("/cart", "/checkout", "/payment")
PATHS = ("/", "/cart", "/checkout", "/payment", "/p/é?x=1&y=2", "../=x/*", "/no-time")
COUNTRIES = ("DE", "FR", "ü:x")
USERS = ("u1", "u2", "u3", "u4", "u5", "../../etc/passwd", "a:b*c?[]{}|z", "ü" * 40)
# (path, status, a piece of the message) of the web API's refusals for this spec.
API_ERRORS = [
    ("/v1/aggregations/rooms/tumbling_1m/closed?room=1", 404, "unknown aggregation 'rooms'"),
    ("/v1/aggregations/checkout/daily/closed?page_path=/cart", 404, "keeps no window 'daily'"),
    ("/v1/aggregations/page_views/tumbling_1m/closed?page_path=/cart", 400, "country is required"),
    ("/v1/aggregations/checkout/tumbling_1m/closed?page_path=", 400, "has no null key parts"),
]


def spec() -> Spec:
    return parse_spec(SPEC_PATH.read_text(encoding="utf-8"), list(WINDOWS))


def _ts(event_ms: int) -> int | float:
    return event_ms // 1000 if event_ms % 1000 == 0 else event_ms / 1000


def _record(partition: int, body: Any) -> gt.Produced:
    return gt.Produced(partition, b"k", body if isinstance(body, bytes) else orjson.dumps(body))


def _outcome(event_ms: int, uid: str | None, path: str | None, country: str | None, ms: float | None,
             *, page_views: bool = True, users: bool = True, checkout: bool = True,
             reason: str | None = None) -> Outcome:
    """What the spec counts of a click with these values (False: that aggregation rejects it)."""
    counted = []
    if page_views:
        counted.append(Counted("page_views", (path, country), (ms,), (uid,)))
    if users and uid is not None:
        counted.append(Counted("users", (uid,), (ms,)))
    if checkout and path in CHECKOUT and ms is not None:
        counted.append(Counted("checkout", (path,), (ms,)))
    if reason is None and uid is None:
        reason = MISSING_FIELD  # users': the first aggregation that rejects it
    if reason is None and path in CHECKOUT and ms is None:
        reason = MISSING_FIELD  # checkout's
    return Outcome(event_ms, tuple(counted), reason)


def _body(event_ms: int, uid: str | None, path: str, country: str | None, ms: float | None) -> dict[str, Any]:
    body: dict[str, Any] = {"page": {"path": path}, "ts": _ts(event_ms)}
    for name, value in (("uid", uid), ("country", country), ("ms_on_page", ms)):
        if value is not None:
            body[name] = value
    return body


def click(partition: int, event_ms: int, rng: random.Random) -> Sent:
    uid = None if rng.random() < 0.05 else rng.choice(USERS)
    path = rng.choice(PATHS)
    country = None if rng.random() < 0.2 else rng.choice(COUNTRIES)
    ms = None if path == "/no-time" or rng.random() < 0.1 else rng.randrange(0, 40_000) / 4
    return Sent(_record(partition, _body(event_ms, uid, path, country, ms)),
                _outcome(event_ms, uid, path, country, ms))


def defective(partition: int, event_ms: int, rng: random.Random, which: int) -> Sent:
    """A record that some aggregations reject, or that is a dead letter as a whole; `which` chooses."""
    uid, country, ms = rng.choice(USERS), rng.choice(COUNTRIES), rng.randrange(0, 40_000) / 4
    good = _body(event_ms, uid, "/cart", country, ms)
    cases: list[tuple[Any, Outcome]] = [
        (b"{not json", Outcome(None, (), INVALID_JSON)),
        (b'"text"', Outcome(None, (), NOT_AN_OBJECT)),
        ({k: v for k, v in good.items() if k != "ts"}, Outcome(None, (), MISSING_FIELD)),
        ({**good, "ts": "yesterday"}, Outcome(None, (), WRONG_TYPE)),
        ({**good, "ts": True}, Outcome(None, (), WRONG_TYPE)),
        ({**good, "ts": _ts(SENTINEL_MS + 400 * 86_400_000)}, Outcome(None, (), TIMESTAMP_OUT_OF_RANGE)),
        # A uid of the wrong type: page_views (its distinct field) and users reject it, checkout counts it.
        ({**good, "uid": 17}, _outcome(event_ms, None, "/cart", country, ms, page_views=False, reason=WRONG_TYPE)),
        # A time on page that is no number: every aggregation rejects it; still archived.
        ({**good, "page": {"path": "/checkout"}, "ms_on_page": "slow"},
         _outcome(event_ms, uid, "/checkout", country, None, page_views=False, users=False, checkout=False,
                  reason=WRONG_TYPE)),
        ({**good, "ms_on_page": True},
         _outcome(event_ms, uid, "/cart", country, None, page_views=False, users=False, checkout=False,
                  reason=WRONG_TYPE)),
        # An empty country: page_views rejects it, users and checkout count it.
        ({**good, "country": ""}, _outcome(event_ms, uid, "/cart", "", ms, page_views=False, reason=BAD_STRING)),
        # A path that is no string: page_views rejects it; checkout's `where` does not match it.
        ({**good, "page": {"path": 5}}, _outcome(event_ms, uid, None, country, ms, page_views=False,
                                                 reason=WRONG_TYPE)),
        # No page object: a null path for page_views, no dead letter.
        ({**good, "page": "home"}, _outcome(event_ms, uid, None, country, ms)),
        # No uid, a checkout page without a time on page: users' reason first.
        (_body(event_ms, None, "/checkout", country, None), _outcome(event_ms, None, "/checkout", country, None)),
    ]
    body, expected = cases[which % len(cases)]
    return Sent(_record(partition, body), expected)


def warmup(seed: int) -> list[Sent]:
    """Phase 0: one good record per partition ten minutes before phase 1. Once the frontier is its low
    watermark, stage 2 knows the low watermark it starts judging alert rules from exactly (every window
    of the phases after it is judged), as in tests/e2e/test_alerts.py."""
    rng = random.Random(seed)
    return [click(partition, BASE_MS - 600_000 + partition * 1_000, rng) for partition in range(PARTITIONS)]


def phase1(per_partition: int, seed: int) -> list[Sent]:
    """On time: per partition in event-time order, disorder below the lateness (10 s), a defective
    record every 11th."""
    rng = random.Random(seed)
    sent: list[Sent] = []
    for i in range(per_partition):
        for partition in range(PARTITIONS):
            event_ms = BASE_MS + i * (600_000 // per_partition) + partition * 13 - rng.choice((0, 0, 2_000, 7_000))
            if i % 11 == 5:
                sent.append(defective(partition, event_ms, rng, i // 11 + partition))
            else:
                sent.append(click(partition, event_ms, rng))
    return sent


def with_oversized_record(sent: list[Sent], seed: int) -> list[Sent]:
    """The same records with one 2 MB click (a dead letter as oversized) at a position chosen by seed."""
    rng = random.Random(seed)
    index = rng.randrange(len(sent))
    body = orjson.dumps(_body(BASE_MS, "u1", "/", "DE", 1.0)) + b" " * gt.OVERSIZED_BYTES
    big = Sent(gt.Produced(rng.randrange(PARTITIONS), b"bad", body), Outcome(None, (), OVERSIZED))
    return [*sent[:index], big, *sent[index:]]


def phase2(frontier_ms: int, seed: int) -> list[Sent]:
    """Clicks wholly late, partly late and on time, none raising a partition's maximum, and one defective
    record per partition."""
    rng = random.Random(seed)
    sent = []
    for partition in range(PARTITIONS):
        for offset_ms in (-50_000, -40_000, -31_000, -29_000, -5_000, -125_000, -86_400_000, 5_000, 9_000):
            sent.append(click(partition, frontier_ms + offset_ms, rng))
        sent.append(defective(partition, frontier_ms - 45_000, rng, rng.randrange(13)))
    return sent


def sentinels() -> list[Sent]:
    """One click per partition two hours ahead: it closes every window of phases 1 and 2."""
    return [Sent(_record(p, _body(SENTINEL_MS, "sentinel", "/sentinel", "DE", 0.0)),
                 _outcome(SENTINEL_MS, "sentinel", "/sentinel", "DE", 0.0)) for p in range(PARTITIONS)]


def reference(on_time: list[tuple[Sent, int]], late_phase: list[tuple[Sent, int]], frontier_ms: int,
              sentinel_offsets: list[int]) -> Expected:
    return specgen.reference(spec(), on_time, late_phase, frontier_ms,
                             list(zip(sentinels(), sentinel_offsets, strict=True)))


def redis_expected(rows: dict[RowKey, AggregateRow], latest_n: int
                   ) -> dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]]:
    return specgen.redis_expected(spec(), rows, latest_n)


def rollups(sent: list[Sent], periods: dict[str, int], before_ms: int
            ) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    return specgen.rollups(spec(), sent, periods, before_ms)
