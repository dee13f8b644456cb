"""The event set of the batch layer's end-to-end tests (test_batch_rollups.py, test_restated_windows.py), its
plain-Python window reference, and helpers to run the batch command and read the lake."""

from __future__ import annotations

import random
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone

import groundtruth as gt
import orjson
from pipeline_harness import Names, list_etags, read_archive, read_objects

from formats.rows import WindowRow, parquet_to_rows

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START_MS = int(datetime(2026, 11, 1, 21, 30, tzinfo=timezone.utc).timestamp() * 1000)
SPAN_MS = 4 * HOUR_MS  # 21:30 on Nov 1 to 01:30 on Nov 2: five hour folders, two days
# Past the end of Nov 2 by more than the lateness: every hour and both days are sealed.
SENTINEL_MS = int(datetime(2026, 11, 3, 0, 30, tzinfo=timezone.utc).timestamp() * 1000)
PER_PARTITION = 500
STEP_DEADLINE_S = 120.0
BATCH_DEADLINE_S = 120.0

Event = tuple[str, str, int, float]  # user_id, event_type, event_ms, value


def on_time_events() -> list[gt.Produced]:
    """In event-time order per partition, disorder within the lateness, hostile strings included."""
    rng = random.Random(5)
    records = []
    for i in range(PER_PARTITION):
        for partition in range(gt.PARTITIONS):
            event_ms = START_MS + i * (SPAN_MS // PER_PARTITION) + partition * 11 - rng.choice((0, 0, 2_000, 7_000))
            user = rng.choice(gt.USERS + ("u4", "u5", "u6"))
            value = rng.randrange(-400, 400) / 4
            records.append(gt.Produced(partition, user.encode(), gt.encode(user, rng.choice(gt.EVENT_TYPES), event_ms,
                                                                          value)))
    return records


def late_events() -> list[gt.Produced]:
    """For hours already sealed and processed: 22:xx and 00:xx, a day late for 21:xx, a new event type
    and new users (the distinct counts change), on every partition."""
    rng = random.Random(9)
    records = []
    hours = (START_MS + 40 * 60_000, START_MS + 60 * 60_000, START_MS + 170 * 60_000)  # 22:10, 22:30, 00:20
    for partition in range(gt.PARTITIONS):
        for n, at in enumerate(hours):
            user = f"late-{partition}-{n}"
            event_type = "refund" if n == 2 else rng.choice(gt.EVENT_TYPES)
            records.append(gt.Produced(partition, user.encode(), gt.encode(user, event_type, at + partition, 99.75)))
    # A day-late event of 21:xx (Nov 1): stage 1 judges it like the others; the batch layer counts it.
    records.append(gt.Produced(1, b"u1", gt.encode("u1", "click", START_MS + 5 * 60_000, -100.0)))
    return records


def sentinels() -> list[gt.Produced]:
    return [gt.Produced(p, b"sentinel", gt.encode("sentinel", "sentinel", SENTINEL_MS, 0.0))
            for p in range(gt.PARTITIONS)]


def decode(records: Iterable[gt.Produced]) -> list[Event]:
    found = []
    for record in records:
        valid = gt.decode_valid(record)
        assert valid is not None
        user = orjson.loads(record.value)["user_id"]
        found.append((user, valid.event_type, valid.event_ms, valid.value))
    return found


def etags(client: object, bucket: str) -> dict[str, str]:
    return list_etags(client, bucket, "")


BATCH_COMMAND = [sys.executable, "-m", "faust", "-A", "app", "batch"]


def archived(client: object, names: Names) -> int:
    return sum(len(rows) for rows in read_archive(client, names.bucket).values())


# -- the 1-minute windows: reference and the lake's rows ---------------------------------

WINDOWS = (("tumbling_1m", 60_000, 60_000), ("hopping_1m", 60_000, 30_000))
WindowKey = tuple[str, int, str]


def window_reference(on_time: list[Event], late: list[Event],
                     windows: tuple[tuple[str, int, int], ...] = WINDOWS) -> dict[WindowKey, WindowRow]:
    """Every window of every event, late ones included (the values are multiples of 0.25, so sums are
    exact in any order); late_count counts the late events, revision is 1 where there are any."""
    found: dict[WindowKey, list[float]] = {}
    lates: Counter[WindowKey] = Counter()
    for n, (_user, event_type, event_ms, value) in enumerate([*on_time, *late]):
        for name, size_ms, step_ms in windows:
            start = event_ms - event_ms % step_ms
            while start > event_ms - size_ms:
                key = (name, start, event_type)
                found.setdefault(key, []).append(value)
                lates[key] += n >= len(on_time)
                start -= step_ms
    size = {name: size_ms for name, size_ms, _ in windows}
    return {key: WindowRow(key[0], key[1], key[1] + size[key[0]], key[2], len(values), sum(values), min(values),
                           max(values), int(lates[key] > 0), lates[key])
            for key, values in found.items()}


def lake_windows(client: object, bucket: str) -> dict[WindowKey, WindowRow]:
    """The window rows in S3 (the rollups aside), asserting one row per key."""
    found: dict[WindowKey, WindowRow] = {}
    rollups = ("aggregated/hourly/", "aggregated/daily/")
    for key, rows in read_objects(client, bucket, "aggregated/", parquet_to_rows, skip=rollups).items():
        for row in rows:
            window_key = (row.window, row.window_start_ms, row.event_type)
            assert window_key not in found, f"{window_key} twice, the second time in {key}"
            found[window_key] = row
    return found
