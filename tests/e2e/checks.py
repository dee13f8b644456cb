"""The pipeline's outputs against a reference, one function per output, each returning its problems.

Used by the end-to-end tests (which assert there are none) and by the chaos suite (which
prints them per iteration). A problem says what differs and shows the first few cases.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from formats.aggregates import AggregateLayout, AggregateRow
from formats.raw import RawColumns
from formats.rows import WindowRow
from formats.side_outputs import (
    HEADER_MISSED,
    HEADER_ORIGINAL_BYTES,
    HEADER_PARTITION,
    HEADER_REASON,
    MAX_FORWARDED_BYTES,
    source_offset,
)
from sinks.redis_store import RedisWindowStore

Rows = Mapping[tuple[str, int, str], tuple[int, float, float, float]]  # (window, start, type) -> count, sum, min, max
SHOWN = 5


def _first(items: Iterable[Any]) -> str:
    items = sorted(items, key=repr)
    more = f" (+{len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(repr(item)[:200] for item in items[:SHOWN]) + more


def _diff(what: str, got: Mapping[Any, Any], want: Mapping[Any, Any]) -> list[str]:
    problems = []
    missing = [key for key in want if key not in got]
    extra = [key for key in got if key not in want]
    wrong = [key for key in want if key in got and got[key] != want[key]]
    if missing:
        problems.append(f"{what}: {len(missing)} missing: {_first(missing)}")
    if extra:
        problems.append(f"{what}: {len(extra)} unexpected: {_first(extra)}")
    if wrong:
        problems.append(f"{what}: {len(wrong)} wrong: " + _first(f"{key}: got {got[key]}, want {want[key]}"
                                                                  for key in wrong))
    return problems


def aggregates(files: Mapping[str, list[WindowRow]], expected: Rows, window_ms: Mapping[str, int]) -> list[str]:
    """The aggregated Parquet rows: one per window key across all objects, with the reference values."""
    rows = [row for file_rows in files.values() for row in file_rows]
    counts = Counter((r.window, r.window_start_ms, r.event_type) for r in rows)
    problems = []
    twice = [key for key, n in counts.items() if n > 1]
    if twice:
        problems.append(f"S3 aggregates: {len(twice)} window rows appear more than once: {_first(twice)}")
    got = {(r.window, r.window_start_ms, r.event_type): (r.count, r.sum, r.min, r.max) for r in rows}
    problems += _diff("S3 aggregates", got, expected)
    for key, file_rows in files.items():
        for row in file_rows:
            hour = f"/hour={(row.window_start_ms // 3_600_000) % 24:02d}/"
            if (row.window_end_ms != row.window_start_ms + window_ms[row.window] or row.mean != row.sum / row.count
                    or not key.startswith(f"aggregated/{row.window}/") or hour not in key):
                problems.append(f"S3 aggregates: row {row} is malformed or misplaced in {key}")
                break
    return problems


def redis_windows_written(store: RedisWindowStore, expected: Rows) -> int:
    """How many reference windows Redis holds, whatever their values: what to wait for before redis_rows.
    S3 is written before Redis, so a window in S3 is not yet one in Redis (a store outage can hold it)."""
    return sum(store.get_window(window, event_type, start) is not None for (window, start, event_type) in expected)


def redis_rows(store: RedisWindowStore, expected: Rows, window_ms: Mapping[str, int]) -> list[str]:
    """Every reference window in Redis with its values, and each latest-N index newest first."""
    got: dict[tuple[str, int, str], tuple[int, float, float, float]] = {}
    for (window, start, event_type) in expected:
        row = store.get_window(window, event_type, start)
        if row is not None:
            if row.window_end_ms != start + window_ms[window]:
                return [f"Redis: window {window} {event_type} {start} has end {row.window_end_ms}"]
            got[(window, start, event_type)] = (row.count, row.sum, row.min, row.max)
    problems = _diff("Redis windows", got, expected)
    for window in window_ms:
        for event_type in {t for (w, _, t) in expected if w == window}:
            starts = sorted((s for (w, s, t) in expected if w == window and t == event_type), reverse=True)
            latest = [row.window_start_ms for row in store.latest(window, event_type, 5)]
            if latest != starts[:5]:
                problems.append(f"Redis latest index of {window}/{event_type!r}: {latest}, want {starts[:5]}")
    return problems


def dead_letters(records: Iterable[Any], expected: Iterable[tuple[int, int, bytes, str]]) -> list[str]:
    """Each expected (partition, source offset, original bytes, reason) once in the dead-letter topic,
    the original cut to MAX_FORWARDED_BYTES with its true size in a header when longer."""
    got: Counter[tuple[int, int | None, bytes, str, int | None]] = Counter()
    problems = []
    for record in records:
        headers = dict(record.headers)
        if headers.get(HEADER_PARTITION, b"").decode() != str(record.partition):
            problems.append(f"dead letter in partition {record.partition} names another source partition")
        size = headers.get(HEADER_ORIGINAL_BYTES)
        got[(record.partition, source_offset(list(record.headers)), bytes(record.value),
             headers[HEADER_REASON].decode(), None if size is None else int(size))] += 1
    want: Counter[tuple[int, int | None, bytes, str, int | None]] = Counter()
    for partition, offset, raw, reason in expected:
        cut = len(raw) > MAX_FORWARDED_BYTES
        want[(partition, offset, raw[:MAX_FORWARDED_BYTES], reason, len(raw) if cut else None)] += 1
    twice = [key[:2] for key, n in got.items() if n > 1]
    if twice:
        problems.append(f"dead letters: {len(twice)} written more than once: {_first(twice)}")
    problems += _diff("dead letters", {key[:2]: key[2:] for key in got}, {key[:2]: key[2:] for key in want})
    return problems


def late_records(records: Iterable[Any], expected: Mapping[tuple[int, int], tuple[tuple[str, int], ...]]) -> list[str]:
    """Each expected (partition, source offset) once in the late topic, with the windows it missed."""
    got: dict[tuple[int, int | None], tuple[tuple[str, int], ...]] = {}
    twice = []
    for record in records:
        missed = dict(record.headers)[HEADER_MISSED].decode().split(",")
        windows = tuple(sorted((name, int(start)) for name, start in (m.split("@") for m in missed)))
        key = (record.partition, source_offset(list(record.headers)))
        if key in got:
            twice.append(key)
        got[key] = windows
    problems = [f"late records: {len(twice)} written more than once: {_first(twice)}"] if twice else []
    return problems + _diff("late records", got, {key: tuple(sorted(m)) for key, m in expected.items()})


def archive(files: Mapping[str, list[Any]], valid: set[tuple[int, int]]) -> list[str]:
    """Every valid event once in the raw archive, in files of one event-time hour named by their first record."""
    positions = Counter((partition, offset) for rows in files.values() for partition, offset, _ in rows)
    problems = []
    twice = [key for key, n in positions.items() if n > 1]
    if twice:
        problems.append(f"raw archive: {len(twice)} events archived more than once: {_first(twice)}")
    problems += _diff("raw archive", {key: True for key in positions}, {key: True for key in valid})
    for key, rows in files.items():
        if not rows:
            problems.append(f"raw archive: {key} is empty")
            continue
        first_ms = rows[0][2].event_ms
        hours = {event.event_ms // 3_600_000 for _, _, event in rows}
        name = key.rsplit("/", 1)[-1]
        if (len(hours) != 1 or f"/hour={(first_ms // 3_600_000) % 24:02d}/" not in key
                or name != f"part-{rows[0][0]:05d}-{rows[0][1]:020d}.parquet"):
            problems.append(f"raw archive: {key} spans hours or is misnamed")
    return problems


# -- a spec's outputs (tests/e2e/specref.py) -------------------------------------------------------------

SpecRows = Mapping[tuple[str, str, int, tuple[Any, ...]], AggregateRow]  # (aggregation, window, start, key) -> row
SpecIndex = Mapping[tuple[str, str, tuple[Any, ...]], list[AggregateRow]]  # (aggregation, window, key) -> newest first


def spec_rows(files: Mapping[str, list[AggregateRow]], expected: SpecRows) -> list[str]:
    """A spec's Parquet rows: one per (aggregation, window, start, key) across all objects, equal to the
    reference's, each object holding one window instance in its aggregation's folder."""
    rows = [row for file_rows in files.values() for row in file_rows]
    counts = Counter((r.aggregation, r.window, r.window_start_ms, r.key) for r in rows)
    problems = []
    twice = [key for key, n in counts.items() if n > 1]
    if twice:
        problems.append(f"S3 spec rows: {len(twice)} rows appear more than once: {_first(twice)}")
    got = {(r.aggregation, r.window, r.window_start_ms, r.key): r for r in rows}
    problems += _diff("S3 spec rows", got, expected)
    for key, file_rows in files.items():
        instances = {(r.aggregation, r.window, r.window_start_ms) for r in file_rows}
        if len(instances) != 1:
            problems.append(f"S3 spec rows: {key} holds {len(instances)} window instances, not one")
            continue
        ((aggregation, window, start),) = instances
        hour = f"/hour={(start // 3_600_000) % 24:02d}/"
        if not key.startswith(f"aggregated/{aggregation}/{window}/") or hour not in key or \
                f"/{window}-{start}-part" not in key:
            problems.append(f"S3 spec rows: {aggregation}/{window}@{start} misplaced in {key}")
    return problems


def _spec_index(store: RedisWindowStore, expected: SpecIndex, layouts: Mapping[str, AggregateLayout],
                n: int) -> dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]]:
    return {(aggregation, window, key): store.latest_aggregates(aggregation, window, key, n, layouts[aggregation])
            for (aggregation, window, key) in expected}


def spec_redis_written(store: RedisWindowStore, expected: SpecIndex, layouts: Mapping[str, AggregateLayout]) -> int:
    """How many keys' Redis indexes already hold their newest reference window: what to wait for."""
    got = _spec_index(store, expected, layouts, 1)
    return sum(got[k] == rows[:1] for k, rows in expected.items())


def spec_redis(store: RedisWindowStore, expected: SpecIndex, layouts: Mapping[str, AggregateLayout]) -> list[str]:
    """Each key's Redis index of a spec's aggregation: exactly the reference's rows, newest first."""
    n = max(len(rows) for rows in expected.values()) + 1
    return _diff("Redis spec index", _spec_index(store, expected, layouts, n), expected)


def spec_archive(files: Mapping[str, list[RawColumns]], expected: Mapping[tuple[int, int], bytes]) -> list[str]:
    """Every record with a good time once in the raw archive with its original bytes, in files of one
    event-time hour named by their first record."""
    positions: Counter[tuple[int, int]] = Counter()
    got: dict[tuple[int, int], bytes] = {}
    problems = []
    for key, (columns,) in files.items():
        for offset, raw in zip(columns.offsets, columns.raws, strict=True):
            positions[(columns.partition, offset)] += 1
            got[(columns.partition, offset)] = raw
        if not columns.offsets:
            problems.append(f"raw archive: {key} is empty")
            continue
        first_ms = columns.event_ms[0]
        hours = {event_ms // 3_600_000 for event_ms in columns.event_ms}
        name = key.rsplit("/", 1)[-1]
        if (len(hours) != 1 or f"/hour={(first_ms // 3_600_000) % 24:02d}/" not in key
                or name != f"part-{columns.partition:05d}-{columns.offsets[0]:020d}.parquet"):
            problems.append(f"raw archive: {key} spans hours or is misnamed")
    twice = [key for key, n in positions.items() if n > 1]
    if twice:
        problems.append(f"raw archive: {len(twice)} records archived more than once: {_first(twice)}")
    return problems + _diff("raw archive", got, expected)
