"""The batch layer's hourly and daily rollups on Apache Spark, for lakes that outgrow one machine.

    PYTHONPATH=. spark-submit batch/spark_job.py --lake s3a://BUCKET/PREFIX [--from T] [--to T]
    PYTHONPATH=. python -m batch.spark_job --master 'local[2]' --lake DIR [--from T] [--to T]

It computes the rows the embedded engine (batch/rollup.py) computes and writes them to the same
objects: the names of formats.lake.rollup_key, the bytes of formats.batch.rollups_to_parquet. Spark
scans and aggregates; the rows (one per period and event type) are collected on the driver and
written through Hadoop's FileSystem of the lake's URI, one whole object each, so the layout holds
no Spark part files, `_SUCCESS` markers or checksum files.

What it reads is what the embedded engine counts: the driver lists `events/` and keeps the objects
with an archiver's name in an hour folder (formats.lake.parse_raw_key); Spark computes each file's
stats and the driver asks batch.inputs.raw_file_problem, the embedded engine's rule, which files to
skip. A period is its files' hour folder (or day), as there.

Definitions as in batch/rollup.py: count, min, max, exact distinct user_id (count(DISTINCT)),
percentiles by nearest rank, computed exactly: per (period, event type) the count of each distinct
value, a running sum over them in value order, and the smallest value whose running count reaches
rank ceil(P*n/100) (integer arithmetic). Not the same: `sum` is Spark's plain sum in the order its
tasks meet the rows, where the embedded engine sums with compensation in the lake's order, so for
arbitrary values the two may differ in the last bits (values exact in binary, such as the tests'
multiples of 0.25, give equal sums); and a zero's sign in min, max and the percentiles may differ
(-0.0 or 0.0, equal as numbers: Spark groups -0.0 with 0.0, and the two engines pick differently
between them).

Scope: a recompute of the hours overlapping [--from, --to) (default: every hour in the lake) and of
their days, like `faust -A app batch --from --to`. It does not decide sealing (it reads no Kafka:
give it hours that `faust -A app batch` reports sealed), writes no manifests (the embedded job
then recomputes those periods once, to the same rows), and does not restate the 1-minute windows.
It reads every file with the raw schema instead of checking each file's own: a missing column reads
as nulls, and the file is skipped as in the embedded engine, but a raw column of another type stops
the job with Spark's error naming the file, where the embedded engine skips the file.

On a cluster the lake is an `s3a://` URI and the hadoop-aws connector must be on Spark's classpath
(`--packages org.apache.hadoop:hadoop-aws:<Spark's Hadoop version>`); the driver needs this
repository on PYTHONPATH and the project's requirements (pyarrow, orjson, boto3), the executors
nothing but Spark (no Python UDFs). Tested in Spark local mode on a local copy of the lake and through
s3a on the embedded S3 (tests/spark/test_spark_rollups.py, `make test-spark`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pyarrow as pa

from batch.inputs import FOREIGN_NAME, RawFileStats, raw_file_problem
from batch.periods import Period, day_of, parse_time, periods_overlapping
from formats.batch import RollupRow, rollups_to_parquet
from formats.lake import DAY_MS, RAW_DIR, RawKey, parse_raw_key, rollup_key
from formats.parquet import PARQUET_CONTENT_TYPE
from formats.raw import RAW_SCHEMA

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

__all__ = ["HadoopLake", "SparkReport", "SparkRollupError", "plan_inputs", "run_spark_rollups"]

PERCENTS: Final = (50, 95, 99)
# The raw archive's columns (formats.raw.RAW_SCHEMA) as Spark reads them: timestamp[ms, tz=UTC] is a TIMESTAMP.
_SPARK_TYPES: Final = {pa.int32(): "INT", pa.int64(): "BIGINT", pa.string(): "STRING",
                       pa.timestamp("ms", tz="UTC"): "TIMESTAMP", pa.float64(): "DOUBLE"}
RAW_DDL: Final = ", ".join(f"`{column.name}` {_SPARK_TYPES[column.type]}" for column in RAW_SCHEMA)
# A raw file's key below the lake root, found in the path Spark reports (an archiver's name: ASCII only).
RAW_KEY_PATTERN: Final = (r"events/year=[0-9]{4}/month=[0-9]{2}/day=[0-9]{2}/hour=[0-9]{2}/"
                          r"part-[0-9]{5}-[0-9]{20}\.parquet$")


class SparkRollupError(RuntimeError):
    """A selected period has raw files and none of them could be counted: its rollup would be wrong."""


class HadoopLake:
    """The lake under a root URI (file:, s3a:, hdfs:, ...) through Hadoop's FileSystem on the driver."""

    def __init__(self, spark: SparkSession, root: str) -> None:
        jvm = spark.sparkContext._jvm  # noqa: SLF001 - py4j is PySpark's door to Hadoop's FileSystem
        assert jvm is not None
        self._path = jvm.org.apache.hadoop.fs.Path
        root_path = self._path(root)
        self._fs = root_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())  # noqa: SLF001
        self._fs.setWriteChecksum(False)  # no .crc beside each object on a local file system
        self.root = str(self._fs.makeQualified(root_path).toString()).rstrip("/") + "/"

    def uri(self, key: str) -> str:
        return self.root + key

    def list_keys(self, prefix: str) -> list[str]:
        """Every file under `prefix` (relative to the root), as keys relative to the root, sorted."""
        base = self._path(self.root + prefix)
        if not self._fs.exists(base):
            return []
        found = []
        files = self._fs.listFiles(base, True)
        while files.hasNext():
            path = str(files.next().getPath().toString())
            if path.startswith(self.root):
                found.append(path[len(self.root):])
        return sorted(found)

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        """Write (overwrite) one whole object; `content_type` is not stored (Hadoop has no such metadata)."""
        del content_type
        stream = self._fs.create(self._path(self.root + key), True)
        try:
            stream.write(bytearray(body))
        finally:
            stream.close()


@dataclass(frozen=True, slots=True)
class InputPlan:
    """What a run reads and computes: the raw files by key (their names parsed), the periods."""

    files: Mapping[str, RawKey]
    hours: Sequence[int]  # hourly periods computed
    days: Sequence[int]  # daily periods computed (every hour folder of each is read)
    skipped: Mapping[str, str]  # key -> why, for objects never read (foreign names, no hour folder)


def plan_inputs(keys: Sequence[str], from_ms: int | None, to_ms: int | None) -> InputPlan:
    """The embedded job's selection (batch/job.py): the hours overlapping [from_ms, to_ms) and their days."""
    by_hour: dict[int, dict[str, RawKey]] = {}
    skipped: dict[str, str] = {}
    for key in keys:
        name = parse_raw_key("", key)
        if name.hour_start_ms is None:
            skipped[key] = "foreign object, not in an hour folder events/year=YYYY/month=MM/day=DD/hour=HH/"
            continue
        by_hour.setdefault(name.hour_start_ms, {})[key] = name
    hours = periods_overlapping(sorted(by_hour), from_ms, to_ms)
    days = sorted({day_of(hour) for hour in hours})
    files: dict[str, RawKey] = {}
    for hour, names in by_hour.items():
        if day_of(hour) not in days:
            continue
        for key, name in names.items():
            if name.archive_name:
                files[key] = name
            else:
                skipped[key] = FOREIGN_NAME
    return InputPlan(files, hours, days, skipped)


@dataclass(slots=True)
class SparkReport:
    rows: dict[Period, list[RollupRow]] = field(default_factory=dict)
    events: dict[Period, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    objects_written: int = 0


def run_spark_rollups(spark: SparkSession, lake: HadoopLake, *, from_ms: int | None, to_ms: int | None,
                      say: Callable[[str], None]) -> SparkReport:
    plan = plan_inputs(lake.list_keys(RAW_DIR), from_ms, to_ms)
    report = SparkReport(skipped=dict(plan.skipped))
    periods = [Period.hourly(hour) for hour in plan.hours] + [Period.daily(day) for day in plan.days]
    counted: list[str] = []
    rows: dict[tuple[str, int], list[RollupRow]] = {}
    events: dict[tuple[str, int], int] = {}
    if plan.files:
        raw = _read_raw(spark, lake, list(plan.files))
        for key, stats in sorted(_file_stats(raw, plan.files).items()):
            problem = raw_file_problem(stats, plan.files[key])
            if problem is None:
                counted.append(key)
            else:
                report.skipped[key] = problem
        if counted:
            rows, events = _rollups(spark, raw, plan.files, counted, plan.hours)
    for period in periods:
        report.rows[period] = rows.get((period.kind, period.start_ms), [])
        report.events[period] = events.get((period.kind, period.start_ms), 0)
    for key, why in sorted(report.skipped.items()):
        say(f"warning: skipped {lake.uri(key)}: {why}")
    _check_readable(periods, plan.files, counted, lake)
    for period in periods:
        period_rows = report.rows[period]
        if not period_rows:
            say(f"{period.label()}: no output (no event counted)")
            continue
        key = rollup_key("", period.kind, period.start_ms)
        lake.put_bytes(key, rollups_to_parquet(period_rows), PARQUET_CONTENT_TYPE)
        report.objects_written += 1
        say(f"{period.label()}: {len(period_rows)} rows from {report.events[period]} events: {lake.uri(key)}")
    return report


def _check_readable(periods: Sequence[Period], files: Mapping[str, RawKey], counted: Sequence[str],
                    lake: HadoopLake) -> None:
    """The embedded job's UnreadableHourError, checked before anything is written."""
    counted_hours = {files[key].hour_start_ms for key in counted}
    for period in periods:
        hours = set(period.hours())
        mine = sorted(key for key, name in files.items() if name.hour_start_ms in hours)
        if mine and not counted_hours & hours:
            raise SparkRollupError(f"error: {period.label()} cannot be read: none of its {len(mine)} raw files "
                                   f"could be counted ({lake.uri(mine[0])})")


def _read_raw(spark: SparkSession, lake: HadoopLake, keys: Sequence[str]) -> DataFrame:
    from pyspark.sql import functions as F  # noqa: N812 - PySpark's own convention

    return (spark.read.schema(RAW_DDL).parquet(*(lake.uri(key) for key in keys))
            .withColumn("key", F.regexp_extract(F.col("_metadata.file_path"), RAW_KEY_PATTERN, 0))
            .withColumn("event_ms", F.unix_millis(F.col("timestamp"))))


def _file_stats(raw: DataFrame, files: Mapping[str, RawKey]) -> dict[str, RawFileStats]:
    """Per file the stats of raw_file_problem; a file Spark yields no row of is empty."""
    from pyspark.sql import functions as F  # noqa: N812

    found = {key: RawFileStats(0, None, None, None, None, None) for key in files}
    nulls = sum((F.col(name).isNull().cast("long") for name in RAW_SCHEMA.names), F.lit(0))
    for row in raw.groupBy("key").agg(F.count(F.lit(1)), F.min("partition"), F.max("partition"), F.min("offset"),
                                      F.min("event_ms"), F.max("event_ms"), F.sum(nulls)).collect():
        found[row[0]] = RawFileStats(*(row[i] for i in range(1, 8)))
    return found


def _rollups(spark: SparkSession, raw: DataFrame, files: Mapping[str, RawKey], counted: Sequence[str],
             hours: Sequence[int]) -> tuple[dict[tuple[str, int], list[RollupRow]], dict[tuple[str, int], int]]:
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812

    selected = set(hours)
    folders = spark.createDataFrame(
        [(key, files[key].hour_start_ms, files[key].hour_start_ms in selected) for key in counted],
        "key STRING, hour_ms BIGINT, hour_selected BOOLEAN")
    events = raw.join(F.broadcast(folders), "key").select("hour_ms", "hour_selected", "user_id", "event_type",
                                                           "value")
    columns = ["user_id", "event_type", "value"]
    by_period = (events.where("hour_selected")
                 .select(F.lit("hourly").alias("period"), F.col("hour_ms").alias("start_ms"), *columns)
                 .unionByName(events.select(F.lit("daily").alias("period"),
                                            (F.col("hour_ms") - F.col("hour_ms") % DAY_MS).alias("start_ms"),
                                            *columns)))
    group = ["period", "start_ms", "event_type"]
    totals = by_period.groupBy(*group).agg(F.count(F.lit(1)).alias("n"), F.sum("value").alias("total"),
                                           F.min("value").alias("low"), F.max("value").alias("high"),
                                           F.countDistinct("user_id").alias("users"))
    # Nearest rank, exactly: the smallest value whose running count reaches ceil(P*n/100).
    running = Window.partitionBy(*group).orderBy("value").rowsBetween(Window.unboundedPreceding,
                                                                      Window.currentRow)
    ranked = (by_period.groupBy(*group, "value").agg(F.count(F.lit(1)).alias("c"))
              .withColumn("below", F.sum("c").over(running))
              .withColumn("n", F.sum("c").over(Window.partitionBy(*group))))
    percentiles = ranked.groupBy(*group).agg(*(
        F.min(F.when(F.col("below") >= F.expr(f"({p} * n + 99) div 100"), F.col("value"))).alias(f"p{p}")
        for p in PERCENTS))
    rows: dict[tuple[str, int], list[RollupRow]] = {}
    events_by_period: dict[tuple[str, int], int] = {}
    for row in totals.join(percentiles, group).collect():
        period = Period(row["period"], int(row["start_ms"]))
        rows.setdefault((period.kind, period.start_ms), []).append(RollupRow(
            period.kind, period.start_ms, period.end_ms, row["event_type"], int(row["n"]), float(row["total"]),
            float(row["low"]), float(row["high"]), int(row["users"]),
            *(float(row[f"p{p}"]) for p in PERCENTS)))
        events_by_period[(period.kind, period.start_ms)] = events_by_period.get((period.kind, period.start_ms),
                                                                                0) + int(row["n"])
    for found in rows.values():
        found.sort(key=lambda r: r.event_type)
    return rows, events_by_period


def _time(option: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return parse_time(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"invalid {option}: {exc}") from None
    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch.spark_job", description="The batch layer's hourly and daily "
                                     "rollups on Apache Spark (see the module's docstring).")
    parser.add_argument("--lake", required=True, metavar="URI",
                        help="The lake's root: a directory (a local copy), or s3a://BUCKET/PREFIX on a cluster.")
    parser.add_argument("--from", dest="from_ms", type=_time("--from"), metavar="T",
                        help="Recompute the hours overlapping [--from, --to) and their days (default: every hour). "
                             "ISO-8601 (no zone means UTC) or epoch milliseconds.")
    parser.add_argument("--to", dest="to_ms", type=_time("--to"), metavar="T", help="End of the range (exclusive).")
    parser.add_argument("--master", help="Spark master, e.g. local[2] (default: spark-submit's).")
    args = parser.parse_args(argv)
    if args.from_ms is not None and args.to_ms is not None and args.to_ms <= args.from_ms:
        parser.error("invalid --to: not after --from")

    from pyspark.sql import SparkSession

    builder = (SparkSession.builder.appName("batch-rollups")
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.showConsoleProgress", "false"))
    if args.master:
        builder = builder.master(args.master).config("spark.ui.enabled", "false")
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    try:
        report = run_spark_rollups(spark, HadoopLake(spark, args.lake), from_ms=args.from_ms, to_ms=args.to_ms,
                                   say=_say)
    except SparkRollupError as exc:
        _say(str(exc))
        return 1
    finally:
        spark.stop()
    hours = sum(1 for period in report.rows if period.kind == "hourly")
    _say(f"spark batch: {_count(hours, 'hour')} and {_count(len(report.rows) - hours, 'day')} computed; "
         f"{_count(report.objects_written, 'object')} written, {_count(len(report.skipped), 'foreign object')} skipped")
    return 0


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
