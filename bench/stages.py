"""The pipeline's own CPU cost: both stages in one process over in-memory fakes, no broker, S3 or Redis.

`make bench` measures the whole worker, and its figures move by a third from day to day with
this shared machine. This one isolates what a redesign of the stages' state changes: the same
preloaded events as `make bench` (bench.generator, 4 partitions as Kafka's default partitioner
spreads them, the sentinels that close every window), fed to four stage-1 partitions; their
partials and frontiers fed to four stage-2 partitions; the exports encoded as the real sinks
encode them (Parquet, the Redis hash and JSON), and checked against totals computed from the
events (bench.peers.totals). A fake clock advances as if the events arrived at NOMINAL_RATE, so
the stages tick as often per event as they would at that rate.

Reported per run: events / CPU seconds of the process, and how many window keys each step
touched (the partials sent, the two stages' pack entries, the rows exported): with many event
types every one of them is Python work per key (NOTES.md, Performance).

With `--spec PATH --keys N --events-per-key M`, the same over `make bench SPEC=...`'s events of that
spec (bench/spec.py: N keys per aggregation and minute of event time, M events each), its rows encoded
as the sinks encode a spec's (Parquet, and the Redis JSON and hash its output writes), and checked as
`make bench SPEC=...` checks the lake (rows, events and the first measure's sum per aggregation and
window).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import ConsumerRecord

from agents.export import TICK_INTERVAL_S as EXPORT_TICK_S
from agents.export import ExportContext, ExportPartition
from agents.ingest import TICK_INTERVAL_S as INGEST_TICK_S
from agents.ingest import IngestContext, IngestPartition
from aggregations.spec import SpecError
from app import tune_garbage_collector
from bench.__main__ import BASE_MS, PARTITIONS, SENTINEL_AFTER_MS, event_ms, generator, machine, sentinel_value
from bench.peers.job import WindowRow as JobRow
from bench.peers.project import job_window_names
from bench.peers.totals import Check, check, reference
from bench.spec import KeyShape, Recording, Reference, parse_field_keys, row_totals
from commands.loadgen import SpecEventGenerator, produce_events
from formats.aggregates import (
    AggregateColumns,
    aggregate_columns_to_hashes,
    aggregate_columns_to_json,
    aggregate_columns_to_parquet,
)
from formats.partials import PartialColumns, PartialsMessage, decode_stage_message
from formats.redis import aggregate_hash_keys, aggregate_latest_keys, encode_keys
from formats.rows import WindowRow, row_to_hash, row_to_json, rows_to_parquet
from formats.state import PARTIALS_PACK_PREFIX, TOTALS_PACK_PREFIX
from kafka_io.topics import Topics, topics_for
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import Settings, load
from tables.families import Family
from tables.state import decode_export_state, decode_ingest_state
from testing.fakes import FakeBoard, FakeBroker, FakeClock, FakeOutputs, FakeStore

NOMINAL_RATE = 30_000  # events/s the fake clock assumes: the 10,000-event-type goal
FETCH_RECORDS = 500  # per stage-1 partition and fetch, as aiokafka's max_records gives them
FETCH_PARTIALS = 2_000  # partials messages per stage-2 partition and fetch
IDLE_ROUNDS = 40  # rounds without a new export that end a run once the input is read


class EncodingOutputs(FakeOutputs):
    """The fake lake and Redis, paying for the encodings the real sinks make of every row."""

    async def export_window(self, window: str, start_ms: int, part: int, rows: list[WindowRow]) -> str:
        rows_to_parquet(rows)
        for row in rows:
            row_to_hash(row)
            row_to_json(row)
        return await super().export_window(window, start_ms, part, rows)

    async def export_aggregate(self, family: Family, part: int, columns: AggregateColumns) -> str:
        aggregation = family.aggregation
        assert aggregation is not None
        layout = aggregation.layout()
        aggregate_columns_to_parquet(columns, layout)
        if aggregation.redis != "off":  # sinks.redis_store.write_aggregate_columns' encodings
            keys = encode_keys(columns.parts, len(columns))
            aggregate_latest_keys("", aggregation.name, family.window, keys)
            aggregate_columns_to_json(columns, layout)
            if aggregation.redis == "every":
                aggregate_hash_keys("", aggregation.name, family.window, keys, columns.window_start_ms)
                aggregate_columns_to_hashes(columns, layout)
        return await super().export_aggregate(family, part, columns)


def bench_settings(shape: KeyShape | None = None) -> Settings:
    """The worker's settings in `make bench` that bear on the stages."""
    env = {"TOPIC_PARTITIONS": str(PARTITIONS), "IDLE_TIMEOUT": "1h", "ARCHIVE_MAX_AGE": "250ms"}
    if shape is not None:
        env["AGGREGATIONS"] = str(shape.spec_path)
    return load(env)


def preloaded(events: int, event_types: int | None, shape: KeyShape | None = None,
              reference: Reference | None = None) -> dict[int, list[ConsumerRecord[bytes, bytes]]]:
    """`make bench`'s topic, per partition: the events as its preload sends them, then one sentinel each.
    With a key shape, its spec's events, each added to `reference` (bench.__main__.preload's)."""
    partitioner = DefaultPartitioner()
    every = list(range(PARTITIONS))
    records: dict[int, list[ConsumerRecord[bytes, bytes]]] = {p: [] for p in every}

    def append(partition: int, key: bytes, value: bytes) -> None:
        log = records[partition]
        log.append(ConsumerRecord("events", partition, len(log), -1, 0, key, value, None, len(key), len(value), ()))

    async def send(key: bytes, value: bytes) -> None:
        append(partitioner(key, every, every), key, value)

    if shape is None:
        asyncio.run(produce_events(send, generator(event_types), rate=0, count=events, event_ms=event_ms))
        sentinel = sentinel_value(events)
    else:
        assert reference is not None
        source = Recording(shape.generator(seed=1), reference)
        asyncio.run(produce_events(send, source, rate=0, count=events,
                                   event_ms=lambda index: shape.event_ms(BASE_MS, index)))
        end_ms = shape.event_ms(BASE_MS, events)
        sentinel = SpecEventGenerator(shape.spec, keys=1, seed=2).record(end_ms + SENTINEL_AFTER_MS).value
    for partition in every:
        append(partition, b"bench", sentinel)
    return records


async def run_once(settings: Settings, records: dict[int, list[ConsumerRecord[bytes, bytes]]],
                   reference: Reference | None = None) -> dict[str, Any]:
    topics = topics_for(settings)
    broker, outputs, clock, board = FakeBroker(partitions=PARTITIONS), EncodingOutputs(), FakeClock(), FakeBoard()
    ingest_ctx = IngestContext(settings, topics, broker, outputs, board, PipelineStats(),  # type: ignore[arg-type]
                               Path("/nonexistent"), clock, monotonic=clock.monotonic)
    export_ctx = ExportContext(settings, topics, broker, outputs, PipelineStats(),  # type: ignore[arg-type]
                               PipelineMetrics(), Path("/nonexistent"), clock)
    ingest = {p: IngestPartition(ingest_ctx, p, FakeStore(broker, topics.ingest_state, p),  # type: ignore[arg-type]
                                 *decode_ingest_state({}, p), -1, -1) for p in records}
    export = {q: ExportPartition(export_ctx, q, FakeStore(broker, topics.export_state, q),  # type: ignore[arg-type]
                                 decode_export_state({})) for q in range(PARTITIONS)}
    read = dict.fromkeys(records, 0)
    consumed = dict.fromkeys(export, 0)
    lateness_ms = settings.pipeline.allowed_lateness_ms
    ingest_tick_ms, export_tick_ms = int(INGEST_TICK_S * 1000), int(EXPORT_TICK_S * 1000)
    last_ingest_tick = last_export_tick = clock.now_ms
    exports, idle = -1, 0
    started = done = time.process_time()
    while idle <= IDLE_ROUNDS:
        progressed = False
        for p, part in ingest.items():
            batch = records[p][read[p]:read[p] + FETCH_RECORDS]
            if batch:
                await part.process(batch)
                read[p] += len(batch)
                clock.now_ms += len(batch) * 1000 // NOMINAL_RATE
                progressed = True
        if clock.now_ms - last_ingest_tick >= ingest_tick_ms:
            last_ingest_tick = clock.now_ms
            seen = [part.clock.event_ms for part in ingest.values()]
            if None not in seen:  # the watermark board: the low watermark over the partitions
                board.low_ms = min(seen) - lateness_ms  # type: ignore[type-var]
            for part in ingest.values():
                await part.tick(clock.now_ms)
        for q, stage2 in export.items():
            log = broker.log(topics.partials, q)
            if stage2.accepting() and consumed[q] < len(log):
                batch = [ConsumerRecord(topics.partials, q, offset, -1, 0, None, log[offset].value, None, 0, 0, ())
                         for offset in range(consumed[q], min(len(log), consumed[q] + FETCH_PARTIALS))]
                await stage2.process(batch)
                consumed[q] += len(batch)
                progressed = True
        if clock.now_ms - last_export_tick >= export_tick_ms:
            last_export_tick = clock.now_ms
            for stage2 in export.values():
                await stage2.tick(clock.now_ms)
        if progressed:
            continue
        if not all(stage2.accepting() for stage2 in export.values()):
            await asyncio.sleep(0)  # an export job runs: its partition waits for it, as the runner has it
            continue
        clock.now_ms += export_tick_ms
        if outputs.exports != exports:
            exports, idle, done = outputs.exports, 0, time.process_time()
        idle += 1
    cpu_s = done - started
    events = sum(len(log) for log in records.values())
    result = {"events_per_cpu_s": round(events / cpu_s), "cpu_s": round(cpu_s, 2), **touches(broker, topics)}
    if reference is not None:
        expected, got = reference.totals(), row_totals(row for rows in outputs.lake.aggregates.values() for row in rows)
        return {**result, "rows": sum(rows for rows, _, _ in got.values()), "exact": got == expected,
                **({} if got == expected else {"expected": str(expected), "got": str(got)})}
    verdict, rows = exactness(records, outputs)
    return {**result, "windows": f"{verdict.summary()}, {rows} rows", "exact": verdict.exact}


def touches(broker: FakeBroker, topics: Topics) -> dict[str, int]:
    """Window keys each step handled: the partials sent, and the pack entries each stage wrote."""
    def partials(value: bytes | None) -> int:
        message = decode_stage_message(value) if value is not None else None
        return len(message.entries) if isinstance(message, PartialColumns | PartialsMessage) else 0

    def entries(pack: dict[str, Any]) -> int:
        return len(pack["t"] if "t" in pack else pack["e"])  # columns, or an earlier version's entries

    def of_prefix(topic: str, prefix: bytes) -> int:
        return sum(entries(orjson.loads(sent.value)) for q in range(PARTITIONS) for sent in broker.log(topic, q)
                   if sent.value is not None and sent.key is not None and sent.key.startswith(prefix))

    sent_partials = sum(partials(sent.value) for q in range(PARTITIONS) for sent in broker.log(topics.partials, q))
    return {"partials_sent": sent_partials,
            "stage1_pack_entries": of_prefix(topics.ingest_state, PARTIALS_PACK_PREFIX),
            "stage2_pack_entries": of_prefix(topics.export_state, TOTALS_PACK_PREFIX)}


def exactness(records: dict[int, list[ConsumerRecord[bytes, bytes]]], outputs: FakeOutputs) -> tuple[Check, int]:
    """The exported rows against totals computed from the events (the peers' check), and how many rows."""
    names = job_window_names()
    rows = [JobRow(names[row.window], row.window_start_ms, row.event_type, row.count, row.sum, row.min, row.max,
                   row.mean) for rows in outputs.lake.aggregates.values() for row in rows]
    return check(reference(record.value for log in records.values() for record in log), rows), len(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000, help="events preloaded (default 100000)")
    parser.add_argument("--event-types", type=int, default=10_000, metavar="N",
                        help="N equally likely event types (default 10000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the summary is their median (default 3)")
    parser.add_argument("--spec", type=Path, metavar="PATH", help="an aggregation spec instead of the article's job")
    parser.add_argument("--keys", type=int, default=100_000,
                        help="with --spec: keys of each aggregation per minute of event time (default 100000)")
    parser.add_argument("--events-per-key", type=int, default=2,
                        help="with --spec: events of each key per minute of event time (default 2)")
    parser.add_argument("--field-keys", action="append", default=[], metavar="PATH=N",
                        help="with --spec: the key field PATH takes N values, not --keys (device.site=1000); "
                             "repeatable")
    args = parser.parse_args(argv)
    if args.events < 1 or args.runs < 1 or not 1 <= args.event_types <= 100_000:
        parser.error("--events and --runs must be at least 1, --event-types between 1 and 100000")
    shape = reference = None
    if args.spec is not None:
        if args.keys < 1 or args.events_per_key < 1:
            parser.error("--keys and --events-per-key must be at least 1")
        try:
            shape = KeyShape.load(args.spec, args.keys, args.events_per_key, parse_field_keys(args.field_keys))
        except (OSError, SpecError, ValueError) as exc:
            parser.error(f"--spec {args.spec}: {exc}")
        reference = Reference(shape.spec)
    elif args.field_keys:
        parser.error("--field-keys is for --spec")
    settings = bench_settings(shape)
    records = preloaded(args.events, args.event_types, shape, reference)
    tune_garbage_collector()  # as in the worker
    print(f"machine: {machine()}", flush=True)
    results = []
    for run in range(args.runs):
        result = asyncio.run(run_once(settings, records, reference))
        results.append(result)
        print(f"run {run + 1}: {json.dumps(result)}", flush=True)
    median = statistics.median(result["events_per_cpu_s"] for result in results)
    summary = {"events": args.events, "runs": args.runs, "median_events_per_cpu_s": median,
               **({"event_types": args.event_types} if shape is None else
                  {"spec": str(args.spec), "keys": args.keys, "events_per_key": args.events_per_key,
                   "field_keys": dict(shape.field_keys)})}
    print(f"summary: {json.dumps(summary)}")
    return 0 if all(result["exact"] for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
