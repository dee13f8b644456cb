"""The batch layer with a spec (deploy/aggregations/clickstream.toml): each aggregation's hourly and daily
rollups and the restatement of its windows, in whole runs against an in-memory lake and Redis, compared
with a plain-Python reference built from what each event should count as (not from the judge).

Values are multiples of 0.25, so every sum is exact in any order and the reference may add them in its own.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from aggregations.judge import Counted
from aggregations.spec import Aggregation, Spec, parse_spec
from batch.job import Plan, run_batch
from batch.judging import JudgedEvents
from batch.periods import parse_time
from batch.restating import Restatement
from batch.spec_restating import recompute_aggregation
from formats.aggregates import (
    AggregateLayout,
    AggregateRow,
    MeasureStats,
    aggregate_rows_to_parquet,
    parquet_to_aggregate_rows,
)
from formats.batch import manifest_from_json, parquet_to_aggregate_rollup
from formats.events import Event
from formats.lake import (
    DAY_MS,
    HOUR_MS,
    archive_key,
    parse_spec_aggregate_key,
    spec_aggregate_key,
    spec_manifest_key,
    spec_rollup_key,
)
from formats.partials import key_partition, key_text
from formats.raw import RawColumns, events_to_parquet, raw_columns_to_parquet
from tables.windows import parse_windows
from testing.fakes import MemoryLake

SPEC_PATH = Path(__file__).resolve().parents[2] / "deploy" / "aggregations" / "clickstream.toml"
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
SIZES = {w.name: (w.size_ms, w.step_ms) for w in WINDOWS}
HOUR = parse_time("2026-11-01T22:30Z") - 30 * 60_000  # 22:00: the events run into the next day
PARTITIONS = 3
STAGE2_PARTITIONS = 4
PATHS = ("/", "/cart", "/checkout", "/p/é", "../=x")
CHECKOUT = ("/cart", "/checkout", "/payment")
COUNTRIES = ("DE", "FR", None)
USERS = tuple(f"u{i}" for i in range(12)) + ("../../x", "a:b*c")

RowKey = tuple[str, str, int, tuple[Any, ...]]  # aggregation, window, start, key


@dataclass(frozen=True, slots=True)
class Click:
    partition: int
    offset: int
    event_ms: int
    uid: str | None
    path: str
    country: str | None
    ms: float | None

    def record(self) -> bytes:
        body: dict[str, Any] = {"page": {"path": self.path}, "ts": self.event_ms / 1000}
        if self.uid is not None:
            body["uid"] = self.uid
        if self.country is not None:
            body["country"] = self.country
        if self.ms is not None:
            body["ms_on_page"] = self.ms
        return orjson.dumps(body)

    def counted(self) -> dict[str, tuple[tuple[Any, ...], tuple[float | None, ...], tuple[Any, ...]]]:
        """What each aggregation should count, by the shipped spec's text: page_views takes every click
        (null parts and left-out measures allowed), users those with a uid, checkout those of its pages
        with a time on page."""
        found = {"page_views": ((self.path, self.country), (self.ms,), (self.uid,))}
        if self.uid is not None:
            found["users"] = ((self.uid,), (self.ms,), ())
        if self.path in CHECKOUT and self.ms is not None:
            found["checkout"] = ((self.path,), (self.ms,), ())
        return found


def spec() -> Spec:
    return parse_spec(SPEC_PATH.read_text(encoding="utf-8"), [w.name for w in WINDOWS])


def clicks(n: int, seed: int, first_offset: int, start_ms: int, span_ms: int) -> list[Click]:
    rng = random.Random(seed)
    found = []
    for i in range(n):
        partition = i % PARTITIONS
        event_ms = start_ms + rng.randrange(span_ms) // 1000 * 1000 + rng.choice((0, 250, 500))
        found.append(Click(partition, first_offset + i, event_ms, None if rng.random() < 0.05 else rng.choice(USERS),
                           rng.choice(PATHS), rng.choice(COUNTRIES),
                           None if rng.random() < 0.1 else rng.randrange(0, 40_000) / 4))
    return found


def archive(lake: MemoryLake, events: Sequence[Click]) -> None:
    """Raw files (format 2) as the archiver cuts them: per partition and hour, in offset order."""
    files: dict[tuple[int, int, int], RawColumns] = {}
    for click in sorted(events, key=lambda c: (c.partition, c.offset)):
        hour = click.event_ms - click.event_ms % HOUR_MS
        columns = files.setdefault((click.partition, hour, click.offset // 100_000), RawColumns(click.partition))
        columns.append(click.offset, click.event_ms, click.record())
    for columns in files.values():
        lake.raw_put(archive_key("", columns.event_ms[0], columns.partition, columns.offsets[0]),
                     raw_columns_to_parquet(columns))


def _window_starts(event_ms: int, size: int, step: int) -> list[int]:
    start, found = event_ms - event_ms % step, []
    while start > event_ms - size:
        found.append(start)
        start -= step
    return found


def window_reference(the_spec: Spec, events: Sequence[Click]) -> dict[RowKey, AggregateRow]:
    cells: dict[RowKey, list[list[float]]] = {}
    for click in events:
        for name, (key, measures, _) in click.counted().items():
            aggregation = next(a for a in the_spec.aggregations if a.name == name)
            for window in aggregation.windows:
                size, step = SIZES[window]
                for start in _window_starts(click.event_ms, size, step):
                    values = cells.setdefault((name, window, start, key), [[] for _ in measures])
                    for m, value in enumerate(measures):
                        if value is not None:
                            values[m].append(value)
    return {(a, w, s, k): AggregateRow(a, w, s, s + SIZES[w][0], k, tuple(
        MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in values))
        for (a, w, s, k), values in cells.items()}


def _largest(row: AggregateRow | None) -> int:
    return 0 if row is None else max((m.count for m in row.measures if m is not None), default=0)


def restated_reference(speed: dict[RowKey, AggregateRow], full: dict[RowKey, AggregateRow]
                       ) -> dict[RowKey, AggregateRow]:
    """What the lake holds after restating: a row whose statistics the late events changed (or that the
    speed layer never wrote) has revision 1 and late_count its largest measure count's growth."""
    found = {}
    for key, row in full.items():
        old = speed.get(key)
        if old is not None and old.measures == row.measures:
            found[key] = old
        else:
            found[key] = row._replace(revision=1, late_count=_largest(row) - _largest(old))
    return found


def _nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def rollup_reference(events: Sequence[Click], name: str, kind: str) -> dict[int, list[dict[str, Any]]]:
    """Per period start, the rows of one aggregation's rollups (as to_pylist gives them, times as ms)."""
    length = HOUR_MS if kind == "hourly" else DAY_MS
    groups: dict[tuple[int, tuple[Any, ...]], list[Click]] = defaultdict(list)
    for click in events:
        counted = click.counted().get(name)
        if counted is not None:
            groups[(click.event_ms - click.event_ms % length, counted[0])].append(click)
    periods: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (start, key), members in sorted(groups.items(), key=lambda item: (item[0][0], [(p is not None, p)
                                                                                     for p in item[0][1]])):
        row: dict[str, Any] = {"period_start": start, "period_end": start + length, "period": kind}
        row.update(dict(zip(_key_columns(name), key, strict=True)))
        row["events"] = len(members)
        values = [c.counted()[name][1][0] for c in members if c.counted()[name][1][0] is not None]
        stats: list[Any] = [len(values), sum(values), min(values), max(values), sum(values) / len(values),
                            *(_nearest_rank(values, p) for p in (50, 95, 99))] if values else [0] + [None] * 7
        row.update(dict(zip([f"ms_on_page_{s}" for s in ("count", "sum", "min", "max", "mean", "p50", "p95", "p99")],
                            stats, strict=True)))
        if name == "page_views":
            row["uid_distinct"] = len({c.uid for c in members if c.uid is not None})
        periods[start].append(row)
    return periods


def _key_columns(name: str) -> tuple[str, ...]:
    return {"page_views": ("page_path", "country"), "users": ("uid",), "checkout": ("page_path",)}[name]


class AggregateRedis:
    """Redis as the spec's restatement writes it: `every` window's row, the `latest` window per key."""

    def __init__(self) -> None:
        self.rows: dict[RowKey, AggregateRow] = {}
        self.latest: dict[tuple[str, str, tuple[Any, ...]], AggregateRow] = {}
        self.outputs: set[str] = set()

    def write_aggregates(self, rows: Sequence[AggregateRow], layout: AggregateLayout, output: str) -> None:
        assert output != "off", "an aggregation whose Redis output is off was written to Redis"
        self.outputs.add(output)
        for row in rows:
            if output == "every":
                self.rows[(row.aggregation, row.window, row.window_start_ms, row.key)] = row
            held = self.latest.get((row.aggregation, row.window, row.key))
            if held is None or held.window_start_ms <= row.window_start_ms:
                self.latest[(row.aggregation, row.window, row.key)] = row


class Exported:
    def exported(self, hour_ms: int, end_ms: int) -> bool:
        return True


def export_speed_layer(lake: MemoryLake, the_spec: Spec, rows: dict[RowKey, AggregateRow]) -> None:
    """Stage 2's objects: one per (aggregation, window, start, owning partition)."""
    objects: dict[str, list[AggregateRow]] = defaultdict(list)
    for (aggregation, window, start, key), row in rows.items():
        part = key_partition(aggregation, key_text(key), STAGE2_PARTITIONS)
        objects[spec_aggregate_key("", aggregation, window, start, part)].append(row)
    layouts = {a.name: a.layout() for a in the_spec.aggregations}
    for key, file_rows in objects.items():
        lake.raw_put(key, aggregate_rows_to_parquet(file_rows, layouts[file_rows[0].aggregation]))


def windows_in_lake(lake: MemoryLake, the_spec: Spec) -> dict[RowKey, AggregateRow]:
    found: dict[RowKey, AggregateRow] = {}
    for aggregation in the_spec.aggregations:
        for key, (body, _) in lake.objects.items():
            name = parse_spec_aggregate_key("", aggregation.name, key)
            if name is None:
                continue
            for row in parquet_to_aggregate_rows(body, aggregation.name, aggregation.layout()):
                row_key = (row.aggregation, row.window, row.window_start_ms, row.key)
                assert row_key not in found, f"two rows of {row_key}"
                assert (name.window, name.window_start_ms) == (row.window, row.window_start_ms)
                found[row_key] = row
    return found


def rollups_in_lake(lake: MemoryLake, aggregation: Aggregation, kind: str) -> dict[int, list[dict[str, Any]]]:
    found = {}
    prefix = f"aggregated/{aggregation.name}/{kind}/"
    for key, (body, _) in lake.objects.items():
        if key.startswith(prefix):
            table = parquet_to_aggregate_rollup(body, aggregation.rollup_layout())
            table = table.set_column(0, "period_start", table.column(0).cast(pa.int64()))
            table = table.set_column(1, "period_end", table.column(1).cast(pa.int64()))
            rows = table.to_pylist()
            assert key == spec_rollup_key("", aggregation.name, kind, rows[0]["period_start"])
            found[rows[0]["period_start"]] = rows
    return found


def _setup() -> tuple[MemoryLake, AggregateRedis, Restatement, Spec, list[Click], list[Click]]:
    the_spec = spec()
    lake, redis = MemoryLake(), AggregateRedis()
    on_time = clicks(900, 1, 0, HOUR, 2 * HOUR_MS + 30 * 60_000)  # 22:00 to 00:30 the next day
    late = clicks(60, 2, 100_000, HOUR, 2 * HOUR_MS + 30 * 60_000)  # in their own files (offsets from 100,000)
    archive(lake, [*on_time, *late])
    export_speed_layer(lake, the_spec, window_reference(the_spec, on_time))
    return lake, redis, Restatement(WINDOWS, STAGE2_PARTITIONS, Exported(), redis), the_spec, on_time, late


def test_a_spec_run_rolls_up_and_restates_every_aggregation_as_the_reference_says() -> None:
    lake, redis, config, the_spec, on_time, late = _setup()
    lines: list[str] = []
    sealed = HOUR + 10 * HOUR_MS  # the second day is not over: its daily rollups wait
    report = run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lines.append, restatement=config,
                       spec=the_spec)
    everything = [*on_time, *late]
    for aggregation in the_spec.aggregations:
        for kind in ("hourly", "daily"):
            expected_rollups = {start: rows for start, rows in rollup_reference(everything, aggregation.name,
                                                                                 kind).items()
                                if rows[0]["period_end"] <= sealed}
            assert rollups_in_lake(lake, aggregation, kind) == expected_rollups, (aggregation.name, kind)
    speed = window_reference(the_spec, on_time)
    expected = restated_reference(speed, window_reference(the_spec, everything))
    assert windows_in_lake(lake, the_spec) == expected
    restated = {k: r for k, r in expected.items() if r.revision}
    assert restated and report.rows_restated == len(restated)
    assert any(r.late_count > 0 for r in restated.values()) and any(k not in speed for k in restated)
    # Redis: every restated row of an `every` aggregation (checkout); the latest per key of `latest` (page_views);
    # nothing of users (off).
    assert redis.rows == {k: r for k, r in restated.items() if k[0] == "checkout"}
    newest: dict[tuple[str, str, tuple[Any, ...]], AggregateRow] = {}
    for (aggregation, window, _start, key), row in sorted(restated.items(), key=lambda item: item[0][2]):
        if aggregation != "users":
            newest[(aggregation, window, key)] = row
    assert redis.latest == newest and redis.outputs == {"every", "latest"}
    # Manifests, one per aggregation and period, with the aggregation's definition.
    manifest = manifest_from_json(lake.get_bytes(spec_manifest_key("", "users", "hourly", HOUR)))
    assert manifest.definition and manifest.output == spec_rollup_key("", "users", "hourly", HOUR)
    # A second run finds everything up to date and writes nothing.
    before = dict(lake.objects)
    again = run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lines.append, restatement=config,
                      spec=the_spec)
    assert lake.objects == before and again.processed == [] and again.rows_restated == 0
    assert again.restate_up_to_date > 0


def test_a_changed_aggregation_is_computed_again() -> None:
    lake, redis, config, the_spec, on_time, late = _setup()
    sealed = HOUR + 10 * HOUR_MS
    run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lambda _: None, restatement=config, spec=the_spec)
    text = SPEC_PATH.read_text(encoding="utf-8").replace('name = "users"\nkey = ["uid"]',
                                                         'name = "users"\nkey = ["uid"]\nwhere = { country = "DE" }')
    narrower = parse_spec(text, [w.name for w in WINDOWS])
    report = run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lambda _: None, restatement=config,
                       spec=narrower)
    assert report.processed  # the users' periods again, not the others'
    germans = [c for c in [*on_time, *late] if c.country == "DE"]
    users = next(a for a in narrower.aggregations if a.name == "users")
    assert rollups_in_lake(lake, users, "hourly") == {
        start: rows for start, rows in rollup_reference(germans, "users", "hourly").items()}


def test_a_format_1_file_is_read_as_the_articles_records() -> None:
    """An hour archived before the deployment added a spec: its events judged as the article's JSON."""
    article = parse_spec((SPEC_PATH.parent / "article.toml").read_text(encoding="utf-8"), [w.name for w in WINDOWS])
    lake = MemoryLake()
    records = [(0, i, Event(f"u{i % 3}", "click" if i % 2 else "view", HOUR + i * 1000, i / 4)) for i in range(10)]
    lake.raw_put(archive_key("", HOUR, 0, 0), events_to_parquet(records))
    run_batch(lake, sealed_until_ms=HOUR + 2 * HOUR_MS, plan=Plan(), say=lambda _: None, spec=article)
    events = article.aggregations[0]
    rows = rollups_in_lake(lake, events, "hourly")[HOUR]
    assert [(r["event_type"], r["events"], r["value_sum"], r["user_id_distinct"]) for r in rows] == [
        ("click", 5, 0.25 + 0.75 + 1.25 + 1.75 + 2.25, 3), ("view", 5, 0.5 + 1.0 + 1.5 + 2.0, 3)]


@pytest.mark.parametrize("seed", range(5))
def test_recompute_folds_as_the_stages_do(seed: int) -> None:
    """Per partition in offset order, whatever order the files were read in; measures left out stay out."""
    the_spec = spec()
    aggregation = next(a for a in the_spec.aggregations if a.name == "users")
    rng = random.Random(seed)
    events = clicks(300, seed, 0, HOUR, HOUR_MS)
    judged = JudgedEvents()
    for click in rng.sample(events, len(events)):
        counted = click.counted().get("users")
        if counted is not None:
            judged.partitions.append(click.partition)
            judged.offsets.append(click.offset)
            judged.event_ms.append(click.event_ms)
            judged.counted.append(Counted(*counted))
    rows = recompute_aggregation(aggregation, WINDOWS[:1], HOUR, judged)
    expected = {k: r for k, r in window_reference(the_spec, events).items() if k[0] == "users"}
    assert {(r.aggregation, r.window, r.window_start_ms, r.key): r for r in rows.values()} == expected


class CrashingRedis(AggregateRedis):
    """Its writes count with the lake's puts, so a crash can fall on one."""

    def __init__(self, lake: MemoryLake) -> None:
        super().__init__()
        self.lake = lake

    def write_aggregates(self, rows: Sequence[AggregateRow], layout: AggregateLayout, output: str) -> None:
        self.lake.put_bytes("redis-write", b"", "")
        del self.lake.objects["redis-write"]
        super().write_aggregates(rows, layout, output)


@pytest.mark.parametrize("seed", range(4))
def test_a_crash_at_a_random_write_is_completed_exactly_by_the_next_run(seed: int) -> None:
    the_spec = spec()
    lake = MemoryLake()
    redis = CrashingRedis(lake)
    config = Restatement(WINDOWS, STAGE2_PARTITIONS, Exported(), redis)
    on_time = clicks(200, seed, 0, HOUR, 2 * HOUR_MS + 30 * 60_000)
    late = clicks(20, seed + 100, 100_000, HOUR, 2 * HOUR_MS + 30 * 60_000)
    archive(lake, [*on_time, *late])
    export_speed_layer(lake, the_spec, window_reference(the_spec, on_time))
    sealed = HOUR + 10 * HOUR_MS
    probe = MemoryLake()
    probe.objects = dict(lake.objects)
    run_batch(probe, sealed_until_ms=sealed, plan=Plan(), say=lambda _: None,
              restatement=Restatement(WINDOWS, STAGE2_PARTITIONS, Exported(), CrashingRedis(probe)), spec=the_spec)
    crash_at = random.Random(seed).randrange(1, probe.puts + 1)
    print(f"seed {seed}: crash at write {crash_at} of {probe.puts}")
    lake.crash_at = crash_at
    with pytest.raises(SystemExit):
        run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lambda _: None, restatement=config, spec=the_spec)
    lake.crash_at = None
    run_batch(lake, sealed_until_ms=sealed, plan=Plan(), say=lambda _: None, restatement=config, spec=the_spec)
    expected = restated_reference(window_reference(the_spec, on_time), window_reference(the_spec, [*on_time, *late]))
    assert windows_in_lake(lake, the_spec) == expected
    assert redis.rows == {k: r for k, r in expected.items() if k[0] == "checkout" and r.revision}
    everything = [*on_time, *late]
    for aggregation in the_spec.aggregations:
        expected_rollups = {start: rows for start, rows in rollup_reference(everything, aggregation.name,
                                                                             "hourly").items()}
        assert rollups_in_lake(lake, aggregation, "hourly") == expected_rollups
