"""The peers' job in Quix Streams 3.28.1: run with var/peers/quix/bin/python -m bench.peers.quix_app.

JSON values, event time from the `timestamp` field, `group_by("event_type")` (a repartition
topic), then a tumbling 60 s and a hopping 60 s / 30 s window with count, sum, min, max and mean,
each `.final()`: a window is emitted once closed.

Two adjustments to the preloaded topic and the embedded broker, both said in the harness's output:
- Tansu's DescribeConfigs returns no entries, so `TopicManager.derive_topic_config` fails with
  `KeyError: 'retention.ms'` when it derives the repartition and changelog topics: `shim_tansu`
  treats a missing retention as infinite (-1).
- Quix closes windows per key, by that key's latest event time, and the preloaded topic's partitions
  are read in any order: with the default grace (0) events arrive after their window closed and are
  dropped as late. The harness's grace covers the input's whole event-time span, so none is late; once
  the sentinel that ends each input partition has been read, the last one is fanned out to every
  event type, so that every key's event time passes its last window's end + grace and each window
  closes (the sentinels' own windows, an hour later, never close and are never emitted).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from quixstreams import Application
from quixstreams.dataframe.windows import Count, Max, Mean, Min, Sum
from quixstreams.models.topics.manager import TopicManager

from bench.peers.job import HOP_MS, HOPPING, SENTINEL_TYPE, SIZE_MS, TUMBLING, WindowRow, write_report

# Stop when nothing was consumed for this long: the fallback when windows are missing (events dropped).
IDLE_STOP_S = 5.0


def shim_tansu() -> None:
    """Derive Quix's own topics with an infinite `retention.ms`: Tansu's DescribeConfigs returns no entries
    (a KeyError without it), and on Kafka the source's 7 days deleted segments of its repartition topic
    while Quix read them, since it writes the events' month-old timestamps there (NOTES.md, Real Kafka)."""
    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive_topic_config(cls: type[TopicManager], topics: Any) -> Any:
        topics = list(topics)
        for topic in topics:
            topic.broker_config.extra_config["retention.ms"] = "-1"
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_topic_config)  # type: ignore[method-assign]


class Collector:
    """Closed windows in, with the time of the last one; stops the app once every event is accounted for."""

    def __init__(self, app: Application, events: int, types: list[str], partitions: int) -> None:
        self.app = app
        self.events = events
        self.types = types
        self.partitions = partitions
        self.sentinels = 0
        self.rows: list[WindowRow] = []
        self.counted = {TUMBLING: 0, HOPPING: 0}
        self.late = 0
        self.first_s: float | None = None
        self.last_s = 0.0

    def fan_out(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        if self.first_s is None:
            self.first_s = time.monotonic()
        if event["event_type"] != SENTINEL_TYPE:
            return [event]
        # Only the last partition's sentinel closes: a key's event time is its latest over all partitions,
        # so an earlier one would make the other partitions' remaining events late.
        self.sentinels += 1
        if self.sentinels < self.partitions:
            return []
        return [{**event, "event_type": event_type} for event_type in self.types]

    def on_late(self, *_args: Any) -> bool:
        self.late += 1
        return False  # counted, not logged per record

    def collector(self, window: str):  # noqa: ANN201
        def collect(value: dict[str, Any], key: Any, _timestamp: int, _headers: Any) -> None:
            event_type = key.decode() if isinstance(key, bytes) else str(key)
            self.rows.append(WindowRow(window, value["start"], event_type, value["count"], value["sum"],
                                       value["min"], value["max"], value["mean"]))
            self.last_s = time.monotonic()
            self.counted[window] += value["count"]
            # Each event is in one tumbling and two hopping windows.
            if self.counted[TUMBLING] >= self.events and self.counted[HOPPING] >= 2 * self.events:
                self.app.stop()
        return collect


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.quix_app", description=__doc__)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--events", type=int, required=True, help="events in the topic, sentinels excluded")
    # A file, not an argument: 100,000 types outgrow what one argument of a command line may hold (128 KiB).
    parser.add_argument("--types-file", type=Path, required=True, help="the event types, one a line (sentinels)")
    parser.add_argument("--partitions", type=int, required=True, help="input partitions, one sentinel each")
    parser.add_argument("--grace-ms", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    shim_tansu()
    app = Application(broker_address=args.brokers, consumer_group=args.group, auto_offset_reset="earliest",
                      state_dir=args.state_dir, loglevel="WARNING")
    collector = Collector(app, args.events, args.types_file.read_text().split(), args.partitions)
    topic = app.topic(args.topic, value_deserializer="json",
                      timestamp_extractor=lambda value, _headers, _ts, _type: value["timestamp"])
    sdf = app.dataframe(topic).apply(collector.fan_out, expand=True).group_by("event_type")
    aggregates = {"count": Count(), "sum": Sum("value"), "min": Min("value"), "max": Max("value"),
                  "mean": Mean("value")}
    tumbling = sdf.tumbling_window(SIZE_MS, grace_ms=args.grace_ms, name=TUMBLING, on_late=collector.on_late)
    tumbling.agg(**aggregates).final().update(collector.collector(TUMBLING), metadata=True)
    hopping = sdf.hopping_window(SIZE_MS, HOP_MS, grace_ms=args.grace_ms, name=HOPPING, on_late=collector.on_late)
    hopping.agg(**aggregates).final().update(collector.collector(HOPPING), metadata=True)
    app.run(timeout=IDLE_STOP_S, collect=False)
    if collector.first_s is None:
        raise SystemExit("no record read")
    write_report(args.report, first_s=collector.first_s, done_s=collector.last_s or time.monotonic(),
                 rows=collector.rows, late=collector.late)


if __name__ == "__main__":
    main()
