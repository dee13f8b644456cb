"""The peers' job in Spark Structured Streaming (PySpark 4.3.0, local mode): run with
var/spark-venv/bin/python -m bench.peers.spark_app, its Kafka source's jars (var/peers/spark/jars) given.

The article's job (its "Batch Interval Tuning"): JSON from Kafka parsed with `from_json`, a watermark on
the event time, `window("timestamp", "1 minute", "30 seconds")` per `event_type`, extended to count,
sum, min, max and mean and to the tumbling window: one streaming query per window over the preloaded
topic, with the article's `maxOffsetsPerTrigger` (100,000). Where it differs, for the benchmark:

- the watermark's delay is the harness's grace, as the other peers get it (`GRACE_MS=60000` gives the
  article's "1 minute"; by default the input's event-time span, so that no event is late);
- the event time is epoch milliseconds (`timestamp_millis`), where the article's schema reads a
  TimestampType;
- the trigger is AvailableNow: what the topic holds, in batches of maxOffsetsPerTrigger, then stop
  (the article's `processingTime="10 seconds"` would wait between batches);
- the rows go to the driver (`foreachBatch`), as the other peers' go to a list, not to Parquet on S3;
- shuffle partitions: 2, the machine's cores (the article's 200 are sized for its cluster).

The sentinels (an hour of event time after the rest) advance the watermark past every window, so that
append mode emits them all; their own windows never close and are not rows. Timed from the start of the
queries (the JVM and the session are up) to the last batch that emitted rows; the late count is Spark's
`numRowsDroppedByWatermark`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F  # noqa: N812 - PySpark's convention
from pyspark.sql.types import DoubleType, LongType, StringType, StructType

from bench.peers.job import HOP_MS, HOPPING, SENTINEL_TYPE, SIZE_MS, TUMBLING, WindowRow, write_report

MAX_OFFSETS_PER_TRIGGER = 100_000  # the article's
SHUFFLE_PARTITIONS = 2  # this machine's cores
ROCKSDB_STATE_STORE = "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
SCHEMA = (StructType().add("user_id", StringType()).add("event_type", StringType())
          .add("timestamp", LongType()).add("value", DoubleType()))


class Collected:
    """The rows every query's batches emitted, and when the last of them came (time.monotonic)."""

    def __init__(self) -> None:
        self.rows: list[WindowRow] = []
        self.last_s: float | None = None

    def sink(self, window: str):  # noqa: ANN201 - foreachBatch's function
        def write(batch: DataFrame, _batch_id: int) -> None:
            # By name: a Row is a tuple, whose `count` is tuple.count.
            found = [WindowRow(window, row["start_ms"], row["event_type"], row["count"], row["sum"], row["min"],
                               row["max"], row["mean"])
                     for row in batch.collect() if row["event_type"] != SENTINEL_TYPE]
            if found:
                self.rows += found
                self.last_s = time.monotonic()
        return write


def _events(spark: SparkSession, brokers: str, topic: str, grace_ms: int) -> DataFrame:
    raw = (spark.readStream.format("kafka").option("kafka.bootstrap.servers", brokers).option("subscribe", topic)
           .option("startingOffsets", "earliest").option("maxOffsetsPerTrigger", MAX_OFFSETS_PER_TRIGGER)
           .option("failOnDataLoss", "false").load())
    events = raw.select(F.from_json(F.col("value").cast("string"), SCHEMA).alias("data")).select("data.*")
    events = events.withColumn("timestamp", F.timestamp_millis("timestamp"))
    return events.withWatermark("timestamp", f"{grace_ms} milliseconds")


def _windowed(events: DataFrame, step_ms: int) -> DataFrame:
    size, step = f"{SIZE_MS // 1000} seconds", f"{step_ms // 1000} seconds"
    grouped = events.groupBy(F.window("timestamp", size, step), "event_type")
    stats = grouped.agg(F.count("value").alias("count"), F.sum("value").alias("sum"), F.min("value").alias("min"),
                        F.max("value").alias("max"), F.avg("value").alias("mean"))
    return stats.select(F.unix_millis(F.col("window.start")).alias("start_ms"), "event_type", "count", "sum", "min",
                        "max", "mean")


def _dropped(query: Any) -> int:
    return sum(operator.get("numRowsDroppedByWatermark", 0)
               for progress in query.recentProgress for operator in progress.get("stateOperators", ()))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peers.spark_app", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--grace-ms", type=int, required=True)
    parser.add_argument("--jars", type=Path, required=True, help="a directory of the Kafka source's jars")
    parser.add_argument("--checkpoints", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    args = parser.parse_args()
    jars = ",".join(str(path) for path in sorted(args.jars.glob("*.jar")))
    spark = (SparkSession.builder.appName("peers-spark").master("local[2]")
             .config("spark.jars", jars).config("spark.sql.shuffle.partitions", SHUFFLE_PARTITIONS)
             .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
             # State in RocksDB, off the heap, as Spark advises for large state: with the default provider's
             # in-heap maps, 100,000 keys (make bench-peers KEYS=100000) ran out of the 1 GiB default heap.
             .config("spark.sql.streaming.stateStore.providerClass", ROCKSDB_STATE_STORE)
             .config("spark.driver.memory", "2g")
             .config("spark.ui.showConsoleProgress", "false").getOrCreate())
    spark.sparkContext.setLogLevel("WARN")
    collected = Collected()
    try:
        first_s = time.monotonic()
        queries = []
        for window, step_ms in ((TUMBLING, SIZE_MS), (HOPPING, HOP_MS)):
            events = _events(spark, args.brokers, args.topic, args.grace_ms)
            queries.append(_windowed(events, step_ms).writeStream.outputMode("append")
                           .foreachBatch(collected.sink(window)).trigger(availableNow=True)
                           .option("checkpointLocation", str(args.checkpoints / window)).start())
        for query in queries:
            query.awaitTermination()
        late = sum(_dropped(query) for query in queries)
    finally:
        spark.stop()
    if collected.last_s is None:
        raise SystemExit("no window was emitted")
    write_report(args.report, first_s=first_s, done_s=collected.last_s, rows=collected.rows, late=late)


if __name__ == "__main__":
    main()
