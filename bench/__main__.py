"""Preload N events, run one worker, and report events/s through the whole pipeline.

Each run uses fresh topics, bucket and key prefix on one embedded stack (memory storage,
free ports): the events are produced before the worker starts, so the worker reads a
backlog at full speed, as after an outage or in a backfill. Event time advances 1 s per
1,000 events; four sentinels (one per partition) at the end close every window.

Reported per run:
- events/s: N / (time from the worker's first consumed event until every event is
  consumed, every window closed by the data is exported to S3 and Redis, and every
  valid event is in the raw archive);
- p50/p99 of the export delay: from the frontier announcing a window closed to its rows
  being in S3 and Redis.
The summary gives the median of the runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from prometheus_client.parser import text_string_to_metric_families

from aggregations.spec import SpecError
from bench.hammer import Hammer
from bench.peers.totals import reference
from bench.spec import KeyShape, Recording, Reference, lake_totals, parse_field_keys
from commands.loadgen import DEFAULT_TYPES, EventGenerator, RecordSource, SpecEventGenerator, produce_events
from devstack.ports import free_port_block
from devstack.stack import ISOLATED_PORT_COUNT, Endpoints, Stack, isolated_settings, without_service_urls
from formats.events import Event, encode_event
from settings import KAFKA_COMPRESSIONS, load, load_devstack

ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4
EVENTS_PER_EVENT_SECOND = 1_000
BASE_MS = 1_793_574_000_000  # 2026-11-01T23:40:00Z: a backfill of past data
# The sentinels that end each partition come this much event time after the last event.
SENTINEL_AFTER_MS = 3_600_000
PRELOAD_BATCH_BYTES = 256 * 1024
# Each codec the settings offer, as the record batch attribute that names it.
CODECS = {name: getattr(DefaultRecordBatch, f"CODEC_{name.upper()}") for name in KAFKA_COMPRESSIONS}
# The events whose record batches are built to measure a codec's size on the wire.
WIRE_SAMPLE_EVENTS = 200_000
# Generous bound on one run: 200k events at 5k/s would take 40 s; a spec's million rows at 3k/s, 330 s.
RUN_DEADLINE_S = 900.0


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def type_weights(event_types: int | None) -> str:
    """The generator's default types, or N equally likely ones (high cardinality: N keys per window)."""
    if event_types is None:
        return DEFAULT_TYPES
    return ",".join(f"type{i:05d}" for i in range(event_types))


def generator(event_types: int | None = None) -> EventGenerator:
    """The preload's generator: the same records again for a reference computed from them (bench.peers)."""
    return EventGenerator(seed=1, users=10_000, types=type_weights(event_types))


def article_rows(count: int, event_types: int | None = None) -> int:
    """The rows the article's job exports for the first `count` preloaded events: one per window of the
    peers' reference (a window instance and event type with events; the worker's default windows are
    the peers' job's)."""
    gen = generator(event_types)
    return len(reference(gen.record(event_ms(index)).value for index in range(count)))


def event_ms(index: int) -> int:
    """Event time of the index-th preloaded event: 1 s per 1,000 events from BASE_MS."""
    return BASE_MS + index * 1000 // EVENTS_PER_EVENT_SECOND


def last_event_ms(count: int) -> int:
    """Where event time ends after `count` events; the sentinels come SENTINEL_AFTER_MS later."""
    return BASE_MS + count * 1000 // EVENTS_PER_EVENT_SECOND


def sentinel_value(count: int) -> bytes:
    """The event that ends each partition after `count` events: SENTINEL_AFTER_MS past them, so every
    window of the events closes."""
    return encode_event(Event("bench", "sentinel", last_event_ms(count) + SENTINEL_AFTER_MS, 0.0))


async def preload(bootstrap: str, topic: str, count: int, event_types: int | None = None,
                  compression: str = "none", shape: KeyShape | None = None,
                  reference: Reference | None = None) -> int:
    """Create `topic` (PARTITIONS partitions) and fill it: `count` events, then one sentinel per partition.
    With a key shape, the events of its spec (each also added to `reference`)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=PRELOAD_BATCH_BYTES,
                                compression_type=None if compression == "none" else compression)
    await producer.start()
    try:
        async def send(key: bytes, value: bytes) -> None:
            await producer.send(topic, key=key, value=value)

        # The produce command's generator and loop at --rate 0, with event time from BASE_MS.
        if shape is None:
            await produce_events(send, generator(event_types), rate=0, count=count, event_ms=event_ms)
            sentinel, end_ms = sentinel_value(count), last_event_ms(count)
        else:
            assert reference is not None
            source = Recording(shape.generator(seed=1), reference)
            await produce_events(send, source, rate=0, count=count, event_ms=partial(shape.event_ms, BASE_MS))
            end_ms = shape.event_ms(BASE_MS, count)
            # A generator of its own, so that the events above do not depend on the sentinels.
            sentinel = SpecEventGenerator(shape.spec, keys=1, seed=2).record(end_ms + SENTINEL_AFTER_MS).value
        # Each sentinel alone in the last record batch of its partition: a reader that takes the end from
        # ListOffsets (Spark's Kafka source) reads it on Tansu too, which answers with the base offset of the
        # last batch + 1 (NOTES.md).
        await producer.flush()
        for partition in range(PARTITIONS):
            await producer.send(topic, key=b"bench", value=sentinel, partition=partition)
        await producer.flush()
        return end_ms
    finally:
        await producer.stop()


def wire_bytes_per_event(compression: str, count: int, event_types: int | None = None,
                         shape: KeyShape | None = None) -> float:
    """Bytes per event of the preloaded events (the first WIRE_SAMPLE_EVENTS) in record batches as
    the preload's producer builds them with `compression`: what the broker stores and sends."""
    builder_of = partial(DefaultRecordBatchBuilder, 2, CODECS[compression], 0, -1, -1, -1, PRELOAD_BATCH_BYTES)
    sample = min(count, WIRE_SAMPLE_EVENTS)
    source: RecordSource = generator(event_types) if shape is None else shape.generator(seed=1)
    builders = [builder_of() for _ in range(PARTITIONS)]
    total = 0
    for index in range(sample):
        timestamp = event_ms(index) if shape is None else shape.event_ms(BASE_MS, index)
        record = source.record(timestamp)
        key, value = record.key, record.value
        # Round robin stands in for the key's hash: each batch holds one partition's records, as the producer's.
        partition = index % PARTITIONS
        if builders[partition].append(index, timestamp, key, value, []) is None:  # full: the record starts the next
            total += len(builders[partition].build())
            builders[partition] = builder_of()
            builders[partition].append(index, timestamp, key, value, [])
    total += sum(len(builder.build()) for builder in builders)
    return total / sample


@contextmanager
def embedded_stack(work_dir: Path) -> Iterator[Endpoints]:
    """The embedded broker (memory storage), S3 and Redis on free ports, state under `work_dir`."""
    # Readiness probes connect before a server listens; their clients' errors are expected noise.
    for noisy in ("aiokafka", "botocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    env = without_service_urls(os.environ)
    ports = free_port_block(ISOLATED_PORT_COUNT)
    config = load_devstack({**env, **isolated_settings(str(work_dir / "stack"), ports, "memory")})
    with Stack(config, buckets=[], env=env) as endpoints:
        yield endpoints


def worker_json(port: int, path: str) -> Any:
    """The JSON the worker at `port` answers on `path`, or None while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return json.loads(response.read())
    except OSError:
        return None


def sink_write_seconds(port: int) -> dict[tuple[str, str], float]:
    """The summed duration of the worker's sink writes by (sink, operation), from its /metrics (threads write
    side by side, so this is thread time, not wall time); empty if it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(sample.labels["sink"], sample.labels["operation"]): sample.value
            for family in text_string_to_metric_families(text) if family.name == "pipeline_sink_write_seconds"
            for sample in family.samples if sample.name.endswith("_sum")}


def worker_status(port: int) -> dict[str, Any] | None:
    """The worker's /v1/status, or None while it does not answer (the soak reads it too)."""
    status: dict[str, Any] | None = worker_json(port, "/v1/status")
    return status


def run_once(endpoints: Endpoints, events: int, work_dir: Path, log_dir: Path, py_spy: str | None = None,
             event_types: int | None = None, compression: str = "none", workers: int = 1,
             shape: KeyShape | None = None, hammer_clients: int = 0) -> dict[str, Any]:
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    topic = f"{run_id}-events"
    started = time.monotonic()
    reference = Reference(shape.spec) if shape is not None else None
    asyncio.run(preload(endpoints.broker_url.removeprefix("kafka://"), topic, events, event_types, compression,
                        shape, reference))
    preload_s = time.monotonic() - started
    want = reference.totals() if reference is not None else None
    rows = article_rows(events, event_types) if want is None else sum(rows for rows, _, _ in want.values())
    result = {"events": events, "preload_s": round(preload_s, 1),
              **measure_worker(endpoints, topic, events, work_dir, log_dir, run_id, py_spy, compression=compression,
                               workers=workers, spec_path=shape.spec_path if shape is not None else None,
                               expected_rows=rows, hammer_clients=hammer_clients)}
    if shape is not None and want is not None:
        got = lake_totals(endpoints.s3_client(), run_id, shape.spec)
        result["exact"] = got == want
        if got != want:
            result["lake_differs"] = {f"{a}/{w}": {"lake": got.get((a, w)), "reference": want.get((a, w))}
                                      for (a, w) in sorted(set(got) | set(want)) if got.get((a, w)) != want.get((a, w))}
        result["rows_per_s"] = round(result["rows_exported"] / result["elapsed_s"])
        # Each output's rows per second of its own writes (the write threads' time, not the run's).
        for sink in ("s3", "redis"):
            seconds = result[f"{sink}_window_write_s"]
            result[f"{sink}_rows_per_write_s"] = round(result["rows_exported"] / seconds) if seconds else None
    return result


def worker_env(endpoints: Endpoints, run_id: str, topic: str, state_dir: Path, port: int, *,
               compression: str = "none", spec_path: Path | None = None) -> dict[str, str]:
    """A bench worker's settings: APP_ID, bucket and key prefix `run_id`, input `topic`, web `port`."""
    return {
        **without_service_urls(os.environ),
        **endpoints.env(),
        "PYTHONPATH": str(ROOT), "APP_ID": run_id, "TOPIC_EVENTS": topic, "TOPIC_DLQ": f"{run_id}-dlq",
        "TOPIC_LATE": f"{run_id}-late", "TOPIC_PARTITIONS": str(PARTITIONS), "LAKE_URL": f"s3://{run_id}/",
        "REDIS_KEY_PREFIX": f"{run_id}:", "WEB_PORT": str(port), "STATE_DIR": str(state_dir),
        "LOG_LEVEL": "warning", "IDLE_TIMEOUT": "1h", "KAFKA_COMPRESSION": compression,
        # The last, partly filled archive files roll by age: keep that tail short so the run
        # measures throughput, not the configured file age (with 1s, 200k events took ~0.75 s
        # more: the four sentinels spill into files of their own, which wait out the age).
        "ARCHIVE_MAX_AGE": "250ms",
        **({"AGGREGATIONS": str(spec_path)} if spec_path is not None else {}),
    }


def measure_worker(endpoints: Endpoints, topic: str, events: int, work_dir: Path, log_dir: Path, run_id: str,
                   py_spy: str | None = None, *, compression: str = "none", workers: int = 1,
                   spec_path: Path | None = None, expected_rows: int | None = None,
                   hammer_clients: int = 0) -> dict[str, Any]:
    """The pipeline (APP_ID `run_id`) over the preloaded `topic`, from its first consumed event until done:
    one worker, or `workers` processes under `python -m commands.workers` (web ports in a row); with
    `spec_path`, on that spec (AGGREGATIONS), done once `expected_rows` rows are exported; with
    `hammer_clients`, that many web clients on the (first) worker's API from the first event on
    (bench/hammer.py)."""
    s3 = endpoints.s3_client()
    s3.create_bucket(Bucket=run_id)
    port = free_port_block(workers)
    env = worker_env(endpoints, run_id, topic, work_dir / run_id, port, compression=compression, spec_path=spec_path)
    total = events + PARTITIONS
    if workers == 1:
        command = [sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"]
    else:
        command = [sys.executable, "-m", "commands.workers", "--count", str(workers), "--loglevel", "warn"]
    if py_spy:  # profile the worker: a collapsed-stack file per run, for a flame graph or a top list
        command = [py_spy, "record", "--format", "raw", "--rate", "200", "-o", str(log_dir / f"{run_id}.pyspy"),
                   *(["--subprocesses"] if workers > 1 else []), "--", *command]
    ports = [port + i for i in range(workers)]
    hammer = Hammer(port, hammer_clients, load(env).pipeline.windows[0].name) if hammer_clients else None
    with open(log_dir / f"{run_id}.log", "wb") as log:
        worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + RUN_DEADLINE_S
        first_s = None
        done_s = None
        stable_since = None
        last_exported = -1
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode}; see {log.name}")
            statuses = [worker_status(p) for p in ports]
            now = time.monotonic()
            if all(statuses):
                status = combined_status(statuses)  # type: ignore[arg-type]
                if first_s is None and status["consumed_total"] > 0:
                    first_s = now
                    if hammer is not None:
                        hammer.start()
                # Done when everything is consumed, the archive buffer is empty, and the
                # export count has stopped growing for a second (all closable windows out), or,
                # when the rows to expect are known, once that many are out: at high cardinality
                # one window's export can take longer than a second.
                if expected_rows is not None:
                    if (status["consumed_total"] >= total and status["archive_buffered"] == 0
                            and status["rows_exported"] >= expected_rows):
                        done_s = now
                        break
                elif status["consumed_total"] >= total and status["archive_buffered"] == 0:
                    if status["windows_exported"] != last_exported:
                        last_exported, stable_since = status["windows_exported"], now
                    elif stable_since is not None and now - stable_since >= 1.0 and last_exported > 0:
                        done_s = stable_since
                        break
            time.sleep(0.05)
        if first_s is None or done_s is None:
            raise RuntimeError(f"run did not finish within {RUN_DEADLINE_S:.0f}s; see {log.name}")
        elapsed = done_s - first_s
        hammered = {} if hammer is None else {"hammer": hammer.stop().summary()}
        written: dict[tuple[str, str], float] = {}
        for p in ports:
            for labels, seconds in sink_write_seconds(p).items():
                written[labels] = written.get(labels, 0.0) + seconds
        return {
            "elapsed_s": round(elapsed, 2),
            "events_per_s": round(events / elapsed), "windows_exported": status["windows_exported"],
            "rows_exported": status["rows_exported"],
            "export_delay_p50_ms": status["export_delay_ms"]["p50"],
            "export_delay_p99_ms": status["export_delay_ms"]["p99"],
            "rss_peak_mib": round(peak_rss_kib(worker.pid) / 1024),
            "s3_window_write_s": round(written.get(("s3", "aggregates"), 0.0), 2),
            "redis_window_write_s": round(written.get(("redis", "windows"), 0.0), 2),
            **hammered,
        }
    finally:
        if hammer is not None:
            hammer.stop()
        worker.send_signal(signal.SIGINT if py_spy else signal.SIGTERM)  # py-spy writes its profile on SIGINT
        try:
            worker.wait(timeout=30 + 30 * workers)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def peak_rss_kib(pid: int) -> int:
    """The peak resident memory (VmHWM) of a process and its descendants, summed: a worker, or the
    workers under commands.workers (py-spy's child, when profiling)."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone already
        return total
    return total + sum(peak_rss_kib(int(child)) for child in children)


def combined_status(statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """What the run's end is judged by, over every worker: counts summed, export delays the worst."""
    def worst(quantile: str) -> int | None:
        values = [s["export_delay_ms"][quantile] for s in statuses if s["export_delay_ms"][quantile] is not None]
        return max(values) if values else None

    return {"consumed_total": sum(s["consumed_total"] for s in statuses),
            "archive_buffered": sum(s["archive_buffered"] for s in statuses),
            "windows_exported": sum(s["windows_exported"] for s in statuses),
            "rows_exported": sum(s.get("rows_exported", 0) for s in statuses),
            "export_delay_ms": {"p50": worst("p50"), "p99": worst("p99")}}


def hammer_comparison(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs without web clients against those with (every other one): medians and their ratios."""
    plain = [r for r in results if "hammer" not in r]
    hammered = [r for r in results if "hammer" in r]

    def median(runs: list[dict[str, Any]], key: str) -> float:
        return statistics.median(r[key] or 0 for r in runs)

    figures: dict[str, Any] = {"clients": hammered[0]["hammer"]["clients"],
                               "requests": [r["hammer"]["requests"] for r in hammered],
                               "by_status": [r["hammer"]["by_status"] for r in hammered]}
    for key in ("events_per_s", "export_delay_p99_ms"):
        without, with_clients = median(plain, key), median(hammered, key)
        figures[key] = {"without": without, "with": with_clients,
                        "ratio": round(with_clients / without, 3) if without else None}
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events preloaded per run (default 200000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; the summary is their median (default 3)")
    parser.add_argument("--py-spy", metavar="PATH", help="profile the worker with this py-spy binary")
    parser.add_argument("--event-types", type=int, metavar="N",
                        help="N equally likely event types instead of the generator's 3 (high cardinality)")
    parser.add_argument("--compression", choices=sorted(CODECS), default="none",
                        help="codec of the preloaded events and of the worker's own producer (KAFKA_COMPRESSION)")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes (python -m commands.workers --count N; default 1)")
    parser.add_argument("--spec", type=Path, metavar="PATH",
                        help="an aggregation spec (AGGREGATIONS) instead of the article's job, with a key shape:")
    parser.add_argument("--keys", type=int, default=100_000,
                        help="with --spec: keys of each aggregation per minute of event time (default 100000)")
    parser.add_argument("--events-per-key", type=int, default=2,
                        help="with --spec: events of each key per minute of event time (default 2)")
    parser.add_argument("--field-keys", action="append", default=[], metavar="PATH=N",
                        help="with --spec: the key field PATH takes N values, not --keys (device.site=1000); "
                             "repeatable")
    parser.add_argument("--hammer", type=int, default=0, metavar="N",
                        help="every other run (the 2nd, 4th...), N web clients read the worker's rollups and open "
                             "windows for up to 60 s (bench/hammer.py); the summary compares the two kinds of run")
    args = parser.parse_args(argv)
    shape = None
    if args.spec is not None:
        if args.event_types is not None:
            parser.error("--event-types is for the article's job; with --spec, --keys sets the cardinality")
        if not 1 <= args.keys <= 10_000_000 or not 1 <= args.events_per_key <= 1_000_000:
            parser.error("--keys must be from 1 to 10000000 and --events-per-key from 1 to 1000000")
        try:
            shape = KeyShape.load(args.spec, args.keys, args.events_per_key, parse_field_keys(args.field_keys))
        except (OSError, SpecError, ValueError) as exc:
            parser.error(f"--spec {args.spec}: {exc}")
    elif args.field_keys:
        parser.error("--field-keys is for --spec")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.events < 1 or args.runs < 1:
        parser.error("--events and --runs must be at least 1")
    if args.event_types is not None and not 1 <= args.event_types <= 100_000:
        parser.error("--event-types must be between 1 and 100000")
    if not 0 <= args.hammer <= 200 or (args.hammer and args.runs < 2):
        parser.error("--hammer must be from 0 to 200, with at least 2 --runs (they alternate without and with)")

    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        work_dir = Path(tmp)
        log_dir = ROOT / "var" / "bench"
        log_dir.mkdir(parents=True, exist_ok=True)
        print(f"machine: {machine()}", flush=True)
        results = []
        with embedded_stack(work_dir) as endpoints:
            for i in range(args.runs):
                result = run_once(endpoints, args.events, work_dir, log_dir, args.py_spy, args.event_types,
                                  args.compression, args.workers, shape, args.hammer if i % 2 else 0)
                results.append(result)
                print(f"run {i + 1}: {json.dumps(result)}", flush=True)
    summary = {
        "machine": machine(), "events": args.events, "runs": args.runs, "event_types": args.event_types or 3,
        "compression": args.compression, "workers": args.workers,
        "wire_bytes_per_event": round(wire_bytes_per_event(args.compression, args.events, args.event_types, shape),
                                      1),
        "median_events_per_s": statistics.median(r["events_per_s"] for r in results),
        "median_export_delay_p50_ms": statistics.median(r["export_delay_p50_ms"] or 0 for r in results),
        "median_export_delay_p99_ms": statistics.median(r["export_delay_p99_ms"] or 0 for r in results),
        "median_rss_peak_mib": statistics.median(r["rss_peak_mib"] for r in results),
    }
    if shape is not None:
        del summary["event_types"]
        summary.update(spec=str(args.spec), keys=shape.keys, events_per_key=shape.events_per_key,
                       field_keys=dict(shape.field_keys),
                       median_rows_per_s=statistics.median(r["rows_per_s"] for r in results),
                       median_s3_rows_per_write_s=statistics.median(r["s3_rows_per_write_s"] or 0 for r in results),
                       median_redis_rows_per_write_s=statistics.median(r["redis_rows_per_write_s"] or 0
                                                                       for r in results),
                       exact=all(r["exact"] for r in results))
    if args.hammer:
        summary["hammer"] = hammer_comparison(results)
    print(f"summary: {json.dumps(summary)}")
    (log_dir / "results.json").write_text(json.dumps({"summary": summary, "runs": results}, indent=2))
    return 0 if summary.get("exact", True) else 1


if __name__ == "__main__":
    raise SystemExit(main())
