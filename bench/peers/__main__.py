"""`make bench-peers`: the same windowed job in Bytewax, Quix Streams and Spark Structured Streaming, interleaved
with this project.

One embedded stack (memory storage, free ports) and one preloaded topic, read by every contender:
EVENTS events (4 partitions, `make bench`'s generator and event times) and a sentinel per partition.
Each round runs this project's worker, then Bytewax, then Quix Streams, then Spark Structured Streaming
(the article's engine, bench/peers/spark_app.py), each from scratch (a new consumer group or none, and empty
state). The job: tumbling 60 s and hopping 60 s / 30 s event-time windows
with count, sum, min, max and mean per event_type.

events/s = EVENTS / wall time from the contender's first consumed record until its last window
is out:
- this project: `make bench`'s measure (every event consumed, every closed window in S3 and Redis,
  every valid event in the raw archive; seen by polling the worker's /v1/status every 50 ms);
- Bytewax and Quix Streams: timed inside the peer process (time.monotonic), from the first record
  its first step sees to the last closed window it emits, which is when its windows account for
  every input event (Bytewax closes them at the end of input; Quix when the sentinels pass);
- Spark: from the start of its streaming queries (its JVM and session are up) to the last batch that
  emitted windows (the sentinels' watermark closes them all).
Start-up, topic creation, group join and state recovery count for none of them.

Each contender's closed windows (this project's read back from the lake) are checked against totals
computed from the generated events (counts, min and max exactly, sum and mean to a relative 1e-9),
with the events each one dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.__main__ import (
    BASE_MS,
    PARTITIONS,
    RUN_DEADLINE_S,
    SENTINEL_AFTER_MS,
    embedded_stack,
    event_ms,
    generator,
    last_event_ms,
    machine,
    measure_worker,
    preload,
    type_weights,
)
from bench.peers.job import SIZE_MS, WINDOW_STEPS_MS, read_report
from bench.peers.project import lake_rows
from bench.peers.table import PROJECT, Contender, format_table
from bench.peers.totals import Check, Key, Totals, check, reference
from commands.loadgen import parse_type_weights
from devstack.stack import without_service_urls

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / "var" / "peers"
BYTEWAX = "Bytewax 0.21.1"
QUIX = "Quix Streams 3.28.1"
SPARK = "Spark Structured Streaming 4.3.0"
SPARK_PYTHON = ROOT / "var" / "spark-venv" / "bin" / "python"  # make test-spark's venv
SPARK_JARS = VENVS / "spark" / "jars"  # its Kafka source (bench/peers/spark/pom.xml)
PEER_NAMES = {"bytewax": BYTEWAX, "quix": QUIX, "spark": SPARK}  # --peers' names

NOTES = (
    "Quix Streams 3.28.1 fails against Tansu with KeyError: 'retention.ms' in TopicManager.derive_topic_config "
    "(Tansu's DescribeConfigs returns no entries), and on Kafka the 7 days it derives from the source topic deleted "
    "its repartition topic's records (stamped with the events' old times) while it read them: its app here "
    "(bench/peers/quix_app.py) derives its topics with infinite retention.",
    "Grace: Quix Streams closes windows per key by that key's latest event time, and with Quix's default grace (0) "
    "a preloaded topic, whose partitions are read in any order, has events dropped as late (--grace-ms 0 shows how "
    "many). By default both peers get a grace (Bytewax: the EventClock's wait) of the input's whole event-time span "
    "plus one window, so that none is late; once every partition's closing sentinel is read, Quix's app fans the "
    "last one out to every event type, so that every key's windows close.",
)


def _peer_env() -> dict[str, str]:
    return {**without_service_urls(os.environ), "PYTHONPATH": str(ROOT)}


def run_peer(name: str, command: list[str], report: Path, log: Path) -> dict[str, Any]:
    """Run one peer app to its end; its report (timing, closed windows, late records)."""
    with open(log, "wb") as out:
        try:
            subprocess.run(command, cwd=ROOT, env=_peer_env(), stdout=out, stderr=subprocess.STDOUT,
                           timeout=RUN_DEADLINE_S, check=True)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as error:
            raise RuntimeError(f"{name} failed ({error}); see {log}") from None
    return read_report(report)


def _peer_result(name: str, report: dict[str, Any], events: int, expected: dict[Key, Totals]) -> dict[str, Any]:
    elapsed = report["done_s"] - report["first_s"]
    return {"contender": name, "elapsed_s": round(elapsed, 2), "events_per_s": round(events / elapsed),
            "late_reported": report["late"], **_verdict(check(expected, report["rows"]))}


def _verdict(verdict: Check) -> dict[str, Any]:
    return {"check": verdict.summary(), "exact": verdict.exact, "dropped": verdict.dropped}


def _summaries(results: list[dict[str, Any]], name: str) -> tuple[str, str]:
    """The check and the dropped events over a contender's rounds, as table cells."""
    done = [r for r in results if r["contender"] == name and "check" in r]
    if not done:
        return "no round finished", "n/a"
    checks = sorted({r["check"] for r in done})
    dropped = sorted({" / ".join(str(r["dropped"][w]) for w in WINDOW_STEPS_MS) for r in done})
    return "; ".join(checks) + (" in every round" if len(done) > 1 and len(checks) == 1 else ""), "; ".join(dropped)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="events preloaded (default 200000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--event-types", "--keys", type=int, metavar="N", dest="event_types",
                        help="N equally likely event types instead of 3: N keys, as the job groups by event type")
    parser.add_argument("--grace-ms", type=int, metavar="MS",
                        help="the peers' grace (default: the input's event-time span plus a window, so none is late)")
    parser.add_argument("--peers", default=",".join(PEER_NAMES), metavar="NAMES",
                        help=f"the peers to run, comma-separated (default {','.join(PEER_NAMES)})")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.peers.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(PEER_NAMES))
    if unknown or not chosen:
        parser.error(f"--peers {args.peers!r}: choose among {', '.join(PEER_NAMES)}")
    if args.events < 1 or args.rounds < 1:
        parser.error("--events and --rounds must be at least 1")
    # Every event is late for no window, whatever the order partitions are read in; the sentinels still close all.
    grace_ms = last_event_ms(args.events) - BASE_MS + SIZE_MS if args.grace_ms is None else args.grace_ms
    if not 0 <= grace_ms <= SENTINEL_AFTER_MS - 2 * SIZE_MS:
        parser.error(f"grace {grace_ms} ms: it must be at least 0 and end a window before the sentinels' event time "
                     "(fewer --events)")
    pythons = {name: VENVS / venv / "bin" / "python" for name, venv in ((BYTEWAX, "bytewax"), (QUIX, "quix"))}
    pythons[SPARK] = SPARK_PYTHON
    pythons = {PEER_NAMES[short]: pythons[PEER_NAMES[short]] for short in PEER_NAMES if short in chosen}
    for name, python in pythons.items():
        if not python.exists():
            parser.error(f"{name}: no venv at {python.parent.parent} (make bench-peers creates it)")

    log_dir = VENVS / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.now(timezone.utc)
    print(f"machine: {machine()}; {started:%Y-%m-%d}", flush=True)
    gen = generator(args.event_types)
    expected = reference(gen.record(event_ms(i)).value for i in range(args.events))
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp, embedded_stack(Path(tmp)) as endpoints:
        work_dir = Path(tmp)
        broker = {"kafka": "Apache Kafka", "tansu": "Tansu (memory storage)"}.get(endpoints.broker, endpoints.broker)
        run_id = f"peers-{uuid.uuid4().hex[:8]}"
        topic = f"{run_id}-events"
        brokers = endpoints.broker_url.removeprefix("kafka://")
        types_file = work_dir / "event-types.txt"
        types_file.write_text("\n".join(parse_type_weights(type_weights(args.event_types))))
        clock = time.monotonic()
        asyncio.run(preload(brokers, topic, args.events, args.event_types))
        print(f"preloaded {args.events} events into {topic} in {time.monotonic() - clock:.1f} s; "
              f"{len(expected)} windows in the reference", flush=True)

        def bytewax(round_id: str) -> list[str]:
            return [str(pythons[BYTEWAX]), "-m", "bench.peers.bytewax_app", "--brokers", brokers, "--topic", topic,
                    "--grace-ms", str(grace_ms), "--report", str(work_dir / f"{round_id}.json")]

        def quix(round_id: str) -> list[str]:
            return [str(pythons[QUIX]), "-m", "bench.peers.quix_app", "--brokers", brokers, "--topic", topic,
                    "--group", round_id, "--events", str(args.events), "--types-file", str(types_file),
                    "--partitions", str(PARTITIONS), "--grace-ms", str(grace_ms),
                    "--state-dir", str(work_dir / round_id), "--report", str(work_dir / f"{round_id}.json")]

        def spark(round_id: str) -> list[str]:
            return [str(pythons[SPARK]), "-m", "bench.peers.spark_app", "--brokers", brokers, "--topic", topic,
                    "--grace-ms", str(grace_ms), "--jars", str(SPARK_JARS), "--checkpoints", str(work_dir / round_id),
                    "--report", str(work_dir / f"{round_id}.json")]

        peers: dict[str, Callable[[str], list[str]]] = {
            name: command for name, command in ((BYTEWAX, bytewax), (QUIX, quix), (SPARK, spark)) if name in pythons}
        for round_no in range(1, args.rounds + 1):
            for name in (PROJECT, *peers):
                round_id = f"{run_id}-r{round_no}-{name.split()[0].lower()}"
                try:
                    if name == PROJECT:
                        result = {"contender": name,
                                  **measure_worker(endpoints, topic, args.events, work_dir, log_dir, round_id,
                                                  expected_rows=len(expected))}
                        result.update(_verdict(check(expected, lake_rows(endpoints.s3_client(), round_id))))
                    else:
                        report = run_peer(name, peers[name](round_id), work_dir / f"{round_id}.json",
                                          log_dir / f"{round_id}.log")
                        result = _peer_result(name, report, args.events, expected)
                except RuntimeError as error:
                    result = {"contender": name, "events_per_s": None, "error": str(error)}
                result["round"] = round_no
                results.append(result)
                print(f"round {round_no}: {json.dumps(result)}", flush=True)
    return _report(args, grace_ms, started, results, broker)


def _report(args: argparse.Namespace, grace_ms: int, started: datetime, results: list[dict[str, Any]],
            broker: str) -> int:
    names = list(dict.fromkeys(r["contender"] for r in results))
    contenders = []
    for name in names:
        rates = [r["events_per_s"] for r in results if r["contender"] == name]
        contenders.append(Contender(name, rates, *_summaries(results, name)))
    table = format_table(contenders)
    heading = (f"{args.events:,} preloaded events, {args.event_types or 3} keys (event types), 4 partitions, {broker}; "
               f"{args.rounds} interleaved rounds; peers' grace {grace_ms:,} ms; {machine()}; "
               f"{started:%Y-%m-%d}")
    print("\nevents/s: input events / wall time from the contender's first consumed record until its last window "
          "is out (this project: every window exported to S3 and Redis and the raw archive written; a peer: the "
          "last closed window emitted, timed in its process).")
    for note in NOTES:
        print(note)
    print(f"\n{heading}\n\n{table}")
    (VENVS / "results.json").write_text(json.dumps({"heading": heading, "notes": NOTES, "table": table,
                                                     "rounds": results}, indent=2))
    failed = [r for r in results if r["events_per_s"] is None or r.get("exact") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
