"""A deterministic event set and its reference results, computed in plain Python.

The set is replayed from the past (as a backfill would be) in three phases, so that
which events are late does not depend on how the worker batches its input:

1. on time: every partition, several event types (hostile ones too), timestamps out of
   order by less than the allowed lateness, an hour boundary crossed, malformed and
   hostile records in between. None of it can be late: a record is at most 7 s behind
   its partition's maximum and the lateness is 10 s.
2. late: sent once the worker's frontier equals min over partitions of (max event time
   - lateness), which is exact because idle advance is disabled (IDLE_TIMEOUT=1h).
   These records do not raise any partition's maximum, so the frontier stays put and
   each record's missed windows are known in advance.
3. sentinels: one record per partition two hours ahead, which closes every window
   of phases 1 and 2 and none of its own.

Values are multiples of 0.25 and small, so every float sum is exact in any order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timezone

import orjson

LATENESS_MS = 10_000
PARTITIONS = 4
WINDOWS = (("tumbling_1m", 60_000, 60_000), ("hopping_1m", 60_000, 30_000))
BASE_MS = int(datetime(2026, 11, 1, 22, 57, tzinfo=timezone.utc).timestamp() * 1000)
SENTINEL_MS = BASE_MS + 2 * 3_600_000
EVENT_TYPES = ("click", "view", "purchase", "../=x/é", "a:b*c?[]{}|z")
USERS = ("u1", "u2", "u3", "../../etc/passwd", "user=admin", "ü" * 40)


@dataclass(frozen=True, slots=True)
class Produced:
    partition: int
    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Valid:
    partition: int
    event_type: str
    event_ms: int
    value: float


def encode(user_id: str, event_type: str, timestamp: int | str, value: float) -> bytes:
    return orjson.dumps({"user_id": user_id, "event_type": event_type, "timestamp": timestamp, "value": value,
                         "extra": "ignored"})


# Malformed records and the reason the worker must give for each.
def malformed(rng: random.Random) -> list[tuple[bytes, str]]:
    now_plus_day_ms = SENTINEL_MS + 400 * 24 * 3_600_000  # far beyond any clock skew
    return [
        (b"{not json", "invalid_json"),
        (b"[1, 2, 3]", "not_an_object"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "value": 1.0}), "missing_field"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "timestamp": BASE_MS, "value": "abc"}),
         "wrong_type"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "timestamp": BASE_MS, "value": True}), "wrong_type"),
        (orjson.dumps({"user_id": "u1", "event_type": "cli\nck", "timestamp": BASE_MS, "value": 1}), "bad_string"),
        (orjson.dumps({"user_id": "u\x00", "event_type": "click", "timestamp": BASE_MS, "value": 1}), "bad_string"),
        (orjson.dumps({"user_id": "u1", "event_type": "x" * 300, "timestamp": BASE_MS, "value": 1}), "bad_string"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "timestamp": "yesterday", "value": 1}),
         "bad_timestamp"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "timestamp": now_plus_day_ms, "value": 1}),
         "timestamp_out_of_range"),
        (orjson.dumps({"user_id": "u1", "event_type": "click", "timestamp": 5, "value": 1}),
         "timestamp_out_of_range"),
        (b'{"user_id": "u1", "event_type": "click", "timestamp": 1, "value": 1e999}', "invalid_json"),
        (encode("u1", "click", BASE_MS, 1.0) + b" " * 70_000, "oversized"),
        (("{" + '"a":1,' * rng.randrange(2, 5) + "}").encode(), "invalid_json"),
    ]


def phase1(per_partition: int, seed: int = 7) -> tuple[list[Produced], list[tuple[int, str]]]:
    """On-time records (and malformed ones); returns them and the DLQ reasons by position."""
    rng = random.Random(seed)
    records: list[Produced] = []
    reasons: list[tuple[int, str]] = []  # (index in records, reason)
    bad = malformed(rng)
    for i in range(per_partition):
        for partition in range(PARTITIONS):
            # 200 ms apart per partition: 6 min of event time for 1,800 records, across 23:00.
            base_ms = BASE_MS + i * (360_000 // per_partition) + partition * 7
            if i % 97 == 13:
                raw, reason = bad[(i // 97 + partition) % len(bad)]
                reasons.append((len(records), reason))
                records.append(Produced(partition, b"bad", raw))
                continue
            event_ms = base_ms - rng.choice((0, 0, 0, 1_000, 3_000, 7_000))
            user = rng.choice(USERS)
            timestamp: int | str = event_ms
            if i % 5 == 0:  # ISO-8601 with and without zone, same instant
                moment = datetime.fromtimestamp(event_ms / 1000, tz=timezone.utc)
                timestamp = moment.isoformat(timespec="milliseconds").replace("+00:00", rng.choice(("Z", "")))
            value = rng.randrange(-400, 400) / 4
            records.append(Produced(partition, user.encode(), encode(user, rng.choice(EVENT_TYPES), timestamp, value)))
    return records, reasons


OVERSIZED_BYTES = 2 * 1024 * 1024  # above the producer's and Kafka's default 1 MiB limits


def with_oversized_record(records: list[Produced], reasons: list[tuple[int, str]], seed: int
                          ) -> tuple[list[Produced], list[tuple[int, str]]]:
    """The same records with one 2 MB record (dead-lettered as oversized) at a position chosen by seed."""
    rng = random.Random(seed)
    index = rng.randrange(len(records))
    big = encode("u1", "click", BASE_MS, 1.0) + b" " * OVERSIZED_BYTES
    records = [*records[:index], Produced(rng.randrange(PARTITIONS), b"bad", big), *records[index:]]
    return records, sorted([(i + (i >= index), reason) for i, reason in reasons] + [(index, "oversized")])


def with_malformed_flood(records: list[Produced], reasons: list[tuple[int, str]]
                         ) -> tuple[list[Produced], list[tuple[int, str]]]:
    """A malformed record (invalid JSON) after every record, in the same partition."""
    flooded: list[Produced] = []
    flooded_reasons = []
    bad = {i: reason for i, reason in reasons}
    for i, record in enumerate(records):
        if i in bad:
            flooded_reasons.append((len(flooded), bad[i]))
        flooded.append(record)
        flooded_reasons.append((len(flooded), "invalid_json"))
        flooded.append(Produced(record.partition, b"bad", b'{"flood": ' + str(i).encode()))
    return flooded, flooded_reasons


def frontier_after(valid: list[Valid]) -> int:
    return min(max(v.event_ms for v in valid if v.partition == p) for p in range(PARTITIONS)) - LATENESS_MS


def windows_of(event_ms: int) -> list[tuple[str, int, int]]:
    """(window, start, end) of every window containing event_ms."""
    found = []
    for name, size_ms, step_ms in WINDOWS:
        start = (event_ms // step_ms) * step_ms
        while start > event_ms - size_ms:
            found.append((name, start, start + size_ms))
            start -= step_ms
    return sorted(found)


def phase2(frontier_ms: int, seed: int = 11) -> list[Produced]:
    """Late records (some partly, some wholly, one a day late) and a few still on time, none raising a
    maximum."""
    rng = random.Random(seed)
    records = []
    for partition in range(PARTITIONS):
        for offset_ms in (-50_000, -40_000, -31_000, -29_000, -5_000, -125_000, -86_400_000, 5_000, 9_000):
            event_ms = frontier_ms + offset_ms
            user = rng.choice(USERS)
            value = rng.randrange(-400, 400) / 4
            records.append(Produced(partition, user.encode(), encode(user, rng.choice(EVENT_TYPES), event_ms, value)))
    return records


def sentinels() -> list[Produced]:
    return [Produced(p, b"sentinel", encode("sentinel", "sentinel", SENTINEL_MS, 0.0)) for p in range(PARTITIONS)]


def decode_valid(record: Produced) -> Valid | None:
    body = orjson.loads(record.value) if record.key != b"bad" else None
    if body is None:
        return None
    timestamp = body["timestamp"]
    if isinstance(timestamp, str):
        moment = datetime.fromisoformat(timestamp)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        timestamp = int(moment.timestamp() * 1000)
    return Valid(record.partition, body["event_type"], timestamp, float(body["value"]))


@dataclass(frozen=True, slots=True)
class Expected:
    rows: dict[tuple[str, int, str], tuple[int, float, float, float]]  # -> count, sum, min, max
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]]  # (partition, offset) -> missed windows


def reference(on_time: list[Valid], late_phase: list[tuple[int, int, Valid]], frontier_ms: int) -> Expected:
    """Aggregates of every closed window, and which phase-2 records are late for which windows."""
    acc: dict[tuple[str, int, str], list[float]] = {}

    def add(event: Valid, window: str, start: int) -> None:
        key = (window, start, event.event_type)
        if key not in acc:
            acc[key] = [0, 0.0, event.value, event.value]
        cur = acc[key]
        cur[0] += 1
        cur[1] += event.value
        cur[2] = min(cur[2], event.value)
        cur[3] = max(cur[3], event.value)

    for event in on_time:
        for window, start, _ in windows_of(event.event_ms):
            add(event, window, start)
    late: dict[tuple[int, int], tuple[tuple[str, int], ...]] = {}
    for partition, offset, event in late_phase:
        missed = []
        for window, start, end in windows_of(event.event_ms):
            if end <= frontier_ms:
                missed.append((window, start))
            else:
                add(event, window, start)
        if missed:
            late[(partition, offset)] = tuple(missed)
    rows = {key: (int(v[0]), v[1], v[2], v[3]) for key, v in acc.items()}
    return Expected(rows, late)
