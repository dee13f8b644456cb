"""The Redis output's cost per row: a window of ROWS IoT device rows written by the worker's own writer
(sinks/redis_store.RedisWindowStore) to the embedded Redis, as rows (write_aggregates, the batch layer's
path) and as columns (write_aggregate_columns, the speed layer's export), with each Redis output (`latest`:
one index member per key; `every`: also the window's hash). Prints, per case, the medians of RUNS windows:
wall time, this process's CPU and the server's CPU (INFO cpu), each per row.

    python -m bench.redis_rows --rows 50000 --runs 3       (make bench-redis)
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis

from bench.__main__ import machine
from devstack.ports import free_port_block
from devstack.services import redis as redis_service
from formats.aggregates import AggregateColumns, AggregateLayout, AggregateRow, MeasureStats
from sinks.redis_store import RedisWindowStore

LAYOUT = AggregateLayout(key=(("device_id", "string"),), measures=("metrics_temp", "metrics_hum"))
START_MS = 1_800_000_000_000
READY_DEADLINE_S = 30.0


def window(rows: int, start_ms: int, rng: random.Random) -> list[AggregateRow]:
    """One closed minute of the IoT spec's devices aggregation: a row per device, both measures."""
    return [AggregateRow("devices", "tumbling_1m", start_ms, start_ms + 60_000, (f"d-{i}",),
                         (MeasureStats(10, rng.uniform(0, 300), rng.uniform(-10, 10), rng.uniform(20, 40)),
                          MeasureStats(10, rng.uniform(0, 900), rng.uniform(0, 40), rng.uniform(50, 99))))
            for i in range(rows)]


def server_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="rows (keys) per window")
    parser.add_argument("--runs", type=int, default=3, help="windows written per case (medians)")
    args = parser.parse_args()
    port = free_port_block(1)
    with tempfile.TemporaryDirectory() as data_dir:
        spec = redis_service(Path(data_dir), port)
        server = subprocess.Popen(spec.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + READY_DEADLINE_S
            while not _ready(spec.ready):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"Redis did not start on port {port} within {READY_DEADLINE_S:.0f} s")
                time.sleep(0.05)
            print(f"machine: {machine()}; {args.rows} rows per window, {args.runs} windows per case")
            measure(f"redis://127.0.0.1:{port}/0", args.rows, args.runs)
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


def _ready(check: Callable[[], bool]) -> bool:
    try:
        return check()
    except redis.exceptions.RedisError:
        return False


def measure(url: str, rows: int, runs: int) -> None:
    rng = random.Random(7)
    info = redis.Redis.from_url(url)
    start_ms = START_MS
    for output in ("latest", "every"):
        for path in ("rows", "columns"):
            store = RedisWindowStore(url, f"bench-{output}-{path}:", 3_600_000, 100)
            store.open()
            wall, client, server = [], [], []
            for _ in range(runs):
                start_ms += 60_000  # a new window each run, as the export writes them
                batch = window(rows, start_ms, rng)
                columns = AggregateColumns.of_rows(batch, LAYOUT)
                cpu, busy, started = time.process_time(), server_cpu_s(info), time.perf_counter()
                if path == "rows":
                    store.write_aggregates(batch, LAYOUT, output)
                else:
                    store.write_aggregate_columns(columns, LAYOUT, output)
                wall.append(time.perf_counter() - started)
                client.append(time.process_time() - cpu)
                server.append(server_cpu_s(info) - busy)
            store.close()
            per_row = {name: round(1e6 * statistics.median(values) / rows, 1)
                       for name, values in (("wall_us", wall), ("client_cpu_us", client), ("server_cpu_us", server))}
            print(json.dumps({"output": output, "path": path, **per_row,
                              "rows_per_s": round(rows / statistics.median(wall))}))
    info.close()


if __name__ == "__main__":
    raise SystemExit(main())
