"""The peers' job in Bytewax 0.21.1: run with var/peers/bytewax/bin/python -m bench.peers.bytewax_app.

Kafka source over the preloaded topic (stops at the end offsets, `tail=False`), keyed by
event_type, one `fold_window` per window (tumbling 60 s, hopping 60 s / 30 s) on an EventClock
over the event's `timestamp`, collected in a list for the harness's check. At the end of input
Bytewax closes every open window.
"""

from __future__ import annotations

import argparse
import math
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import bytewax.operators as op
import orjson
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.dataflow import Dataflow
from bytewax.operators.windowing import EventClock, SlidingWindower, TumblingWindower, fold_window
from bytewax.run import cli_main
from bytewax.testing import TestingSink

from bench.peers.job import HOP_MS, HOPPING, SENTINEL_TYPE, SIZE_MS, TUMBLING, WindowRow, write_report

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Event = tuple[str, datetime, float]  # event_type, event time, value
Acc = list[float]  # count, sum, min, max: mutated in place (ordered=False folds in arrival order)


class Timing:
    """First record in, last closed window out (time.monotonic)."""

    def __init__(self) -> None:
        self.first_s: float | None = None
        self.last_s = 0.0


def build_flow(brokers: str, topic: str, grace_ms: int, timing: Timing, rows: list[WindowRow],
               late: list[object]) -> Dataflow:
    def decode(message: KafkaSourceMessage[bytes | None, bytes | None]) -> Event | None:
        if timing.first_s is None:
            timing.first_s = time.monotonic()
        event = orjson.loads(message.value)  # type: ignore[arg-type]
        if event["event_type"] == SENTINEL_TYPE:  # the end of input is Kafka's, not a marker
            return None
        return event["event_type"], EPOCH + timedelta(milliseconds=event["timestamp"]), event["value"]

    def fold(acc: Acc, event: Event) -> Acc:
        value = event[2]
        acc[0] += 1
        acc[1] += value
        if value < acc[2]:
            acc[2] = value
        if value > acc[3]:
            acc[3] = value
        return acc

    def merge(a: Acc, b: Acc) -> Acc:  # sliding windows never merge; required by fold_window
        return [a[0] + b[0], a[1] + b[1], min(a[2], b[2]), max(a[3], b[3])]

    def row(window: str, step_ms: int):  # noqa: ANN202
        def to_row(item: tuple[str, tuple[int, Acc]]) -> WindowRow:
            event_type, (window_id, (count, total, low, high)) = item
            timing.last_s = time.monotonic()
            return WindowRow(window, window_id * step_ms, event_type, int(count), total, low, high, total / count)
        return to_row

    flow = Dataflow("peers-bytewax")
    messages = op.input("kafka", flow, KafkaSource([brokers], [topic], tail=False))
    events = op.filter_map("decode", messages, decode)
    keyed = op.key_on("by_type", events, lambda event: event[0])
    # No event may be late, whatever order the partitions are read in: the wait covers the input's event-time span.
    clock = EventClock(ts_getter=lambda event: event[1], wait_for_system_duration=timedelta(milliseconds=grace_ms))
    size, hop = timedelta(milliseconds=SIZE_MS), timedelta(milliseconds=HOP_MS)
    windowers = {TUMBLING: (TumblingWindower(length=size, align_to=EPOCH), SIZE_MS),
                 HOPPING: (SlidingWindower(length=size, offset=hop, align_to=EPOCH), HOP_MS)}
    for window, (windower, step_ms) in windowers.items():
        out = fold_window(window, keyed, clock, windower, builder=lambda: [0, 0.0, math.inf, -math.inf],
                          folder=fold, merger=merge, ordered=False)
        op.output(f"{window}-rows", op.map(f"{window}-row", out.down, row(window, step_ms)), TestingSink(rows))
        op.output(f"{window}-late", out.late, TestingSink(late))
    return flow


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.bytewax_app", description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--grace-ms", type=int, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    timing, rows, late = Timing(), [], []
    cli_main(build_flow(args.brokers, args.topic, args.grace_ms, timing, rows, late), workers_per_process=1)
    if timing.first_s is None:
        raise SystemExit("no record read")
    write_report(args.report, first_s=timing.first_s, done_s=timing.last_s or time.monotonic(), rows=rows,
                 late=len(late))


if __name__ == "__main__":
    main()
