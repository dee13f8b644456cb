"""The open state's memory per window key: `python -m bench.state_memory [--keys N] [--measures M]`.

What both stages hold for each key of an open window instance, measured with tracemalloc over the
state classes themselves (tables.partials.InstancePartials, tables.totals.InstanceTotals), as the
stages build them: stage 1 opens each key's slot (as its fold does) and routes it (as its flush
does); stage 2 merges each input partition's partials in messages of MESSAGE_KEYS keys, each key
decoded anew, as every batch and message decodes its keys. The keys are open in INSTANCES instances
of each stage (the default windows: a tumbling window and two hopping ones per minute).

Printed per input layout: a keyed input (each key from one of P partitions, as a producer keyed by
device sends it) on 4 and 12 partitions, and a keyless one (every key from all 4). This is the state
alone: the worker's RSS also holds closed windows waiting for their export, RocksDB's memtables and the
Kafka clients' buffers (`make bench` reports the peak RSS).
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Final

from formats.partials import key_partitions, key_text
from tables.partials import InstancePartials
from tables.totals import InstanceTotals

INSTANCES: Final = 3
MESSAGE_KEYS: Final = 2_000
LAYOUTS: Final = ((4, True), (12, True), (4, False))  # (input partitions, keyed)


def _decoded(keys: list[str]) -> list[str]:
    """New string objects equal to these keys, as a batch's or message's decode makes them."""
    return [key.encode().decode() for key in keys]


def measure(keys: int, measures: int, partitions: int, keyed: bool) -> float:
    """Bytes traced per open window key: `keys` keys in INSTANCES instances of both stages."""
    texts = [key_text([f"d-{i:07d}"]) for i in range(keys)]
    ones, values = [1] * MESSAGE_KEYS * measures, [1.5] * MESSAGE_KEYS * measures
    gc.collect()
    tracemalloc.start()
    held: list[object] = []
    for start in range(INSTANCES):
        partials = InstancePartials("devices/tumbling_1m", start, measures)
        partials.open_slots(_decoded(texts))
        partials.routes(range(keys), lambda batch: key_partitions("devices", batch, 4))
        totals = InstanceTotals("devices/tumbling_1m", start, measures)
        for partition in range(partitions):
            sent = [key for i, key in enumerate(texts) if not keyed or i % partitions == partition]
            for first in range(0, len(sent), MESSAGE_KEYS):
                message = _decoded(sent[first:first + MESSAGE_KEYS])
                n = len(message)
                totals.merge(partition, message, ones[:n * measures], values[:n * measures], values[:n * measures],
                             values[:n * measures], list(range(1, n + 1)))
        totals.dirty = set()  # as once its packs are written
        held += (partials, totals)
    del texts
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return traced / (keys * INSTANCES)


def measure_apart(keys: int, measures: int, partitions: int, keyed: bool) -> float:
    """measure() in a process of its own: what the process holds once (the interned strings' table, the
    shared slot numbers) is grown by the measure itself, as a worker grows it, never by an earlier one."""
    code = f"from bench.state_memory import measure; print(measure({keys}, {measures}, {partitions}, {keyed}))"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], check=True,
                          capture_output=True, text=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.state_memory", description=__doc__.split("\n")[0])
    parser.add_argument("--keys", type=int, default=100_000, help="keys per instance (default 100000)")
    parser.add_argument("--measures", type=int, default=2, help="measures per key (default 2, IoT's devices)")
    args = parser.parse_args()
    for partitions, keyed in LAYOUTS:
        per_key = measure_apart(args.keys, args.measures, partitions, keyed)
        print(json.dumps({"input": "keyed" if keyed else "keyless", "partitions": partitions, "keys": args.keys,
                          "measures": args.measures, "bytes_per_open_window_key": round(per_key)}))


if __name__ == "__main__":
    main()
