"""`make soak`: the load generator at a fixed rate for a while against one worker, with its memory,
lag and window-close delay sampled every few seconds.

    python -m bench.soak --rate 50000 --duration 600

One embedded stack (memory storage, free ports), one worker, one `faust -A app produce --rate R
--duration D`. Every SAMPLE_S it reads the worker's RSS (/proc) and /v1/status. The verdict:
- memory: after the warm-up (the first WARMUP_SHARE of the run), RSS stays within +-10% of its
  median over that part;
- lag: processing lag after the warm-up stays below 2 s of input (rate x 2);
- windows: once the producer stops, every window of the run is exported within CLOSE_WAIT_S: no
  window is open any more (/v1/windows/{name}/open) once every produced event is consumed;
- delay: the window-close delay p99 reported by the worker is below 1 s;
- rate: the load generator produced its rate x duration events within the duration (plus its
  startup, STARTUP_ALLOWANCE_S). At a set rate it sends a count, so a generator short of CPU runs
  longer at a lower rate: such a run keeps the other checks but does not test the asked rate.
Each line and the summary are printed; the exit status is 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from bench.__main__ import worker_json, worker_status
from commands.loadgen import event_limit
from devstack.ports import free_port_block
from devstack.stack import ISOLATED_PORT_COUNT, Stack, isolated_settings, without_service_urls
from settings import load_devstack

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_S = 5.0
WARMUP_SHARE = 0.2
# The producer's own startup (the app, the topic check) before its clock starts.
STARTUP_ALLOWANCE_S = 15.0
PARTITIONS = 4
# After the producer stops, how long the run's last windows may take to close and be exported: with
# the soak's IDLE_TIMEOUT and ALLOWED_LATENESS of 5 s the watermark passes the end of the last 60 s
# window ~70 s after its last event.
CLOSE_WAIT_S = 180.0
CLOSE_POLL_S = 1.0


class Drain(NamedTuple):
    """What the run's end is judged by: events consumed, window exports so far, window rows still open."""

    consumed: int
    exported: int
    open_rows: int


def wait_for_close(read: Callable[[], Drain | None], produced: int, *, timeout_s: float = CLOSE_WAIT_S,
                   clock: Callable[[], float] = time.monotonic,
                   sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Poll `read` until every produced event is consumed and no window is open, twice in a row with no
    export in between (a partial may still be on its way to stage 2 at the first); None then, or why not
    once `timeout_s` has passed."""
    deadline = clock() + timeout_s
    previous: Drain | None = None
    last: Drain | None = None
    while True:
        last = read() or last
        drained = last is not None and last.consumed >= produced and last.open_rows == 0
        if drained and previous == last:
            return None
        previous = last if drained else None
        if clock() >= deadline:
            break
        sleep(CLOSE_POLL_S)
    if last is None:
        return f"the worker did not answer in the {timeout_s:.0f} s after the producer stopped"
    if last.consumed < produced:
        return f"consumed {last.consumed} of {produced} events {timeout_s:.0f} s after the producer stopped"
    return f"{last.open_rows} window rows still open {timeout_s:.0f} s after the producer stopped"


def _drain(port: int) -> Drain | None:
    """The worker's Drain from its status and its open windows, or None while it does not answer."""
    status, listed = worker_status(port), worker_json(port, "/v1/windows")
    if status is None or listed is None:
        return None
    open_rows = 0
    for window in listed["windows"]:
        answer = worker_json(port, f"/v1/windows/{window['name']}/open?scope=local")
        if answer is None:
            return None
        open_rows += len(answer["open"])
    return Drain(status["consumed_total"], status["windows_exported"], open_rows)


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def generator_shortfall(rate: int, duration_s: float, produce_s: float) -> str | None:
    """Why the run does not test `rate`, if its generator (sending rate x duration events) took longer
    than the duration, its startup and one sample's slack; else None."""
    if produce_s <= duration_s + STARTUP_ALLOWANCE_S + SAMPLE_S:
        return None
    produced = event_limit(rate, 0, duration_s)
    return (f"the load generator took {produce_s:.0f} s for {produced} events, ~{produced / produce_s:.0f} "
            f"events/s: the run does not test {rate}/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=50_000)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load (default 600)")
    args = parser.parse_args(argv)
    run_id = f"soak-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        env = without_service_urls(os.environ)
        ports = free_port_block(ISOLATED_PORT_COUNT)
        config = load_devstack({**env, **isolated_settings(str(Path(tmp) / "stack"), ports, "memory")})
        log_dir = ROOT / "var" / "soak"
        log_dir.mkdir(parents=True, exist_ok=True)
        with Stack(config, buckets=[run_id], env=env) as endpoints:
            port = free_port_block(1)
            worker_env = {**env, **endpoints.env(), "PYTHONPATH": str(ROOT), "APP_ID": run_id,
                          "TOPIC_EVENTS": f"{run_id}-events", "TOPIC_DLQ": f"{run_id}-dlq",
                          "TOPIC_LATE": f"{run_id}-late", "TOPIC_PARTITIONS": str(PARTITIONS),
                          "LAKE_URL": f"s3://{run_id}/", "REDIS_KEY_PREFIX": f"{run_id}:", "WEB_PORT": str(port),
                          "STATE_DIR": str(Path(tmp) / "state"), "LOG_LEVEL": "warning",
                          "ALLOWED_LATENESS": "5s", "IDLE_TIMEOUT": "5s"}
            with open(log_dir / f"{run_id}-worker.log", "wb") as log:
                worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "worker", "-l", "warn"],
                                          cwd=ROOT, env=worker_env, stdout=log, stderr=subprocess.STDOUT)
            try:
                return _soak(args, worker, worker_env, port, log_dir, run_id)
            finally:
                worker.terminate()
                worker.wait(timeout=60)


def _soak(args: argparse.Namespace, worker: subprocess.Popen[bytes], env: dict[str, str], port: int, log_dir: Path,
          run_id: str) -> int:
    deadline = time.monotonic() + 120
    while worker_status(port) is None or not worker_status(port)["assigned"]["events"]:  # type: ignore[index]
        if time.monotonic() > deadline or worker.poll() is not None:
            raise SystemExit(f"the worker did not start; see {log_dir}/{run_id}-worker.log")
        time.sleep(0.5)
    with open(log_dir / f"{run_id}-produce.log", "wb") as log:
        producer = subprocess.Popen([sys.executable, "-m", "faust", "-A", "app", "produce", "--rate", str(args.rate),
                                     "--duration", str(args.duration)], cwd=ROOT, env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
    started = time.monotonic()
    samples: list[tuple[float, float, int, dict[str, Any]]] = []
    while producer.poll() is None:
        time.sleep(SAMPLE_S)
        status, rss = worker_status(port), _rss_mb(worker.pid)
        if status is None or rss is None:
            continue
        elapsed = time.monotonic() - started
        lag = sum(status["lag_by_partition"].values())
        samples.append((elapsed, rss, lag, status))
        print(f"t={elapsed:5.0f}s rss={rss:6.0f} MB lag={lag:8d} consumed={status['consumed_total']:10d} "
              f"windows={status['windows_exported']:6d} delay p99={status['export_delay_ms']['p99']} ms", flush=True)
    produce_s = time.monotonic() - started
    produced = event_limit(args.rate, 0, args.duration)  # what the producer sends: its rate x duration
    # The last windows close as IDLE_TIMEOUT advances the watermark once the input stops.
    unclosed = wait_for_close(lambda: _drain(port), produced)
    final = worker_status(port) or {}
    steady = [s for s in samples if s[0] >= args.duration * WARMUP_SHARE]
    problems = []
    if not steady:
        problems.append("no sample after the warm-up")
    else:
        median_rss = statistics.median(s[1] for s in steady)
        low, high = min(s[1] for s in steady), max(s[1] for s in steady)
        if low < 0.9 * median_rss or high > 1.1 * median_rss:
            problems.append(f"RSS left +-10% of its median {median_rss:.0f} MB: {low:.0f}..{high:.0f} MB")
        max_lag = max(s[2] for s in steady)
        if max_lag > 2 * args.rate:
            problems.append(f"processing lag reached {max_lag} records (> 2 s of input)")
    if unclosed:
        problems.append(unclosed)
    short = generator_shortfall(args.rate, args.duration, produce_s)
    if short:
        problems.append(short)
    p99 = final.get("export_delay_ms", {}).get("p99")
    if p99 is None or p99 >= 1000:
        problems.append(f"window-close delay p99 {p99} ms (must be < 1000)")
    summary = {"rate": args.rate, "duration_s": args.duration, "produce_s": round(produce_s),
               "consumed": final.get("consumed_total"),
               "windows_exported": final.get("windows_exported"), "close_delay_p99_ms": p99,
               "rss_mb": [round(s[1]) for s in steady], "max_lag": max((s[2] for s in steady), default=None),
               "problems": problems}
    print(f"summary: {json.dumps(summary)}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
