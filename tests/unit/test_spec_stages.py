"""Both stages in-process on a spec (deploy/aggregations/iot.toml), over the in-memory fakes: readings
of two input partitions through stage 1, its partials through stage 2, and every exported row of every
aggregation, window and device compared with a plain-Python reference computed from the readings
(values are multiples of 0.25, so sums are exact in any order)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson

from agents.export import ExportContext, ExportPartition
from agents.ingest import IngestContext, IngestPartition
from aggregations.spec import parse_spec
from formats.aggregates import AggregateRow, MeasureStats
from formats.events import iso_to_epoch_ms, iso_utc
from kafka_io.topics import topics_for
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import load
from tables.state import decode_export_state, decode_ingest_state
from testing.fakes import FakeBoard, FakeBroker, FakeClock, FakeOutputs, FakeStore

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = load({"TOPIC_PARTITIONS": "2", "ALLOWED_LATENESS": "10s", "IDLE_TIMEOUT": "1h",
                 "ARCHIVE_MAX_RECORDS": "50", "ARCHIVE_MAX_AGE": "3s"})
SPEC = parse_spec((ROOT / "deploy" / "aggregations" / "iot.toml").read_text(),
                  [w.name for w in SETTINGS.pipeline.windows])
SPEC_SETTINGS = replace(SETTINGS, pipeline=replace(SETTINGS.pipeline, spec=SPEC))
TOPICS = topics_for(SPEC_SETTINGS)
BASE_MS = 1_793_574_000_000
SENTINEL_MS = BASE_MS + 3_600_000
WINDOWS = {"tumbling_1m": (60_000, 60_000), "hopping_1m": (60_000, 30_000)}


def _readings(seed: int) -> dict[int, list[dict[str, Any]]]:
    """Per input partition, readings 0.5 s apart with disorder below the lateness, some measures
    missing, a reading without a device id now and then; then a sentinel far ahead."""
    rng = random.Random(seed)
    found: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for p in (0, 1):
        for i in range(300):
            event_ms = BASE_MS + i * 500 + p * 7 - rng.choice((0, 0, 3_000))
            device = {"id": f"d-{rng.randrange(6)}", "site": rng.choice(("berlin", "paris", "rome"))}
            metrics = {"temp": rng.randrange(-80, 80) / 4, "hum": rng.randrange(0, 400) / 4}
            if rng.random() < 0.1:
                del metrics[rng.choice(("temp", "hum"))]
            if rng.random() < 0.05:
                del device["id"]
            found[p].append({"device": device, "metrics": metrics, "time": iso_utc(event_ms)})
        found[p].append({"device": {"id": "sentinel", "site": "none"}, "metrics": {}, "time": iso_utc(SENTINEL_MS)})
    return found


def _reference(readings: dict[int, list[dict[str, Any]]]) -> dict[tuple[Any, ...], AggregateRow]:
    values: dict[tuple[Any, ...], list[list[float]]] = defaultdict(lambda: [[], []])
    for p in (0, 1):
        for reading in readings[p]:
            event_ms = _ms(reading["time"])
            for aggregation in SPEC.aggregations:
                key_field = aggregation.key[0].path.names
                key = reading["device"].get(key_field[1])
                if key is None:
                    continue
                for window, (size, step) in WINDOWS.items():
                    start = event_ms - event_ms % step
                    while start > event_ms - size:
                        cells = values[(aggregation.name, window, start, (key,))]
                        for m, measure in enumerate(aggregation.measures):
                            value = reading["metrics"].get(measure.names[1])
                            if value is not None:
                                cells[m].append(value)
                        start -= step
    rows = {}
    for (aggregation, window, start, key), cells in values.items():
        measures = len(next(a for a in SPEC.aggregations if a.name == aggregation).measures)
        stats = tuple(MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in cells[:measures])
        rows[(aggregation, window, start, key)] = AggregateRow(aggregation, window, start, start + 60_000, key, stats)
    return rows


def _ms(text: str) -> int:
    ms = iso_to_epoch_ms(text)
    assert ms is not None
    return ms


async def _run(readings: dict[int, list[dict[str, Any]]]) -> FakeOutputs:
    broker, outputs, clock, board = FakeBroker(partitions=2), FakeOutputs(), FakeClock(), FakeBoard()
    ingest_ctx = IngestContext(SPEC_SETTINGS, TOPICS, broker, outputs, board, PipelineStats(),  # type: ignore[arg-type]
                               Path("/nonexistent"), clock, monotonic=clock.monotonic)
    export_ctx = ExportContext(SPEC_SETTINGS, TOPICS, broker, outputs, PipelineStats(),  # type: ignore[arg-type]
                               PipelineMetrics(), Path("/nonexistent"), clock)
    ingest = {p: IngestPartition(ingest_ctx, p, FakeStore(broker, TOPICS.ingest_state, p),  # type: ignore[arg-type]
                                 *decode_ingest_state({}, p), -1, -1) for p in (0, 1)}
    stage2 = {q: ExportPartition(export_ctx, q, FakeStore(broker, TOPICS.export_state, q),  # type: ignore[arg-type]
                                 decode_export_state({})) for q in (0, 1)}
    seen = {0: 0, 1: 0}
    read = dict.fromkeys(stage2, 0)
    highest = {0: None, 1: None}
    for index in range(0, 301, 20):
        for p, part in ingest.items():
            batch = readings[p][index:index + 20]
            if not batch:
                continue
            records = [SimpleNamespace(offset=seen[p] + i, value=orjson.dumps(r), timestamp=-1, key=b"k", headers=[])
                       for i, r in enumerate(batch)]
            seen[p] += len(batch)
            await part.process(records)
            highest[p] = max(_ms(r["time"]) for r in readings[p][:index + 20])
        if all(h is not None for h in highest.values()):
            board.low_ms = min(h for h in highest.values() if h is not None) - 10_000
        clock.now_ms += 1_000
        for part in ingest.values():
            await part.tick(clock())
        for q, part2 in stage2.items():
            log = broker.log(TOPICS.partials, q)
            fresh = log[read[q]:]
            if fresh:
                await part2.process([SimpleNamespace(offset=m.offset, value=m.value) for m in fresh])
                read[q] = len(log)
            await part2.tick(clock())
            job = part2._job
            if job is not None:
                await job
            await part2.tick(clock())
    return outputs


def test_every_aggregation_window_and_key_is_exported_once_with_the_references_rows() -> None:
    readings = _readings(7)
    outputs = asyncio.run(_run(readings))
    got = {(r.aggregation, r.window, r.window_start_ms, r.key): r
           for rows in outputs.lake.aggregates.values() for r in rows}  # type: ignore[union-attr]
    want = {k: r for k, r in _reference(readings).items() if k[3] != ("sentinel",) and k[3] != ("none",)}
    got = {k: r for k, r in got.items() if k[3] != ("sentinel",) and k[3] != ("none",)}
    assert got == want
    assert len(got) > 80 and {(a, w) for a, w, _, _ in got} == {(a.name, w) for a in SPEC.aggregations for w in WINDOWS}
    assert any(None in row.measures for row in got.values())  # a device window without humidity
    assert outputs.aggregate_redis.keys() >= want.keys()
    rows = sum(len(r) for r in outputs.lake.aggregates.values())
    assert rows == len(got) + sum(1 for rs in outputs.lake.aggregates.values() for r in rs  # type: ignore[union-attr]
                                  if r.key in (("sentinel",), ("none",)))  # each row exported once
