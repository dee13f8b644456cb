"""The Spark entry point (batch/spark_job.py) against the embedded engine (batch/job.py) on the same lake.

`make test-spark` runs it in its own venv with PySpark; without PySpark (the project's venv, `make test`)
the module is skipped at collection. Spark runs in local mode as `python -m batch.spark_job`, a process
of its own, on a local copy of the lake, and on the same lake in the embedded S3 through s3a (hadoop-aws
and the AWS SDK bundle, `make spark-jars`). The lake holds five hours over a day
boundary, raw files that arrive after their hour was computed (late events), and objects that both
engines must skip. Every rollup object must have the same name and bytes on both sides, and its rows
must equal a plain-Python reference.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from testing.reference import nearest_rank

pytest.importorskip("pyspark", reason="PySpark is not installed: `make test-spark` runs this in var/spark-venv")

from batch.job import Plan, run_batch  # noqa: E402
from batch.report import RunReport
from devstack.stack import Endpoints
from formats.batch import ROLLUP_SCHEMA, RollupRow, parquet_to_rollups
from formats.events import Event  # noqa: E402
from formats.raw import events_to_parquet
from sinks.lake import archive_key  # noqa: E402

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
START_MS = int(datetime(2026, 11, 1, 21, tzinfo=timezone.utc).timestamp() * 1000)  # 21:00 Nov 1 to 02:00 Nov 2
HOURS = [START_MS + h * HOUR_MS for h in range(5)]
PARTITIONS = 3
TYPES = ("click", "view", "buy", "../=x/é", "line\nbreak")
USERS = [f"u{i}" for i in range(40)] + ["😀" * 20, "a/b=c"]
SEALED_MS = START_MS + 2 * DAY_MS
SPARK_DEADLINE_S = 240.0  # one local-mode job: a JVM start (~10 s here) and a few small stages

Counted = tuple[int, str, str, float]  # hour folder, user_id, event_type, value


class DirectoryLake:
    """The batch job's lake (batch.job.BatchLake) over a local directory: key = path below it, ETag = MD5."""

    bucket = "local"
    prefix = ""

    def __init__(self, root: Path) -> None:
        self.root = root

    def list_etags(self, prefix: str) -> dict[str, str]:
        found = {}
        for path in self.root.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix):
                found[key] = hashlib.md5(path.read_bytes()).hexdigest()  # noqa: S324 - an ETag, not security
        return found

    def get_bytes(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


class Lakes:
    """The same raw objects written to two directories: one for each engine."""

    def __init__(self, base: Path) -> None:
        self.embedded, self.spark = base / "embedded", base / "spark"
        self.counted: list[Counted] = []
        self.next_offset = [0] * PARTITIONS

    def put(self, key: str, body: bytes) -> None:
        for root in (self.embedded, self.spark):
            DirectoryLake(root).put_bytes(key, body, "")

    def raw_file(self, rng: random.Random, partition: int, hour_ms: int, events: int, *,
                 counted: bool = True) -> str:
        """An archiver's file of `partition` at its next offset, event times in the hour (sorted, as read)."""
        start = self.next_offset[partition]
        times = sorted(hour_ms + rng.randrange(HOUR_MS) for _ in range(events))
        records = [(partition, start + i, Event(user_id=rng.choice(USERS), event_type=rng.choice(TYPES), event_ms=at,
                                                value=rng.randrange(-400, 400) / 4))  # exact in binary
                   for i, at in enumerate(times)]
        key = archive_key("", times[0], partition, start)
        self.put(key, events_to_parquet(records))
        self.next_offset[partition] += events
        if counted:
            self.counted += [(hour_ms, e.user_id, e.event_type, float(e.value)) for _p, _o, e in records]
        return key


def on_time(lakes: Lakes) -> set[str]:
    """Two files per partition and hour, and the objects both engines skip (returned)."""
    rng = random.Random(3)
    for hour in HOURS:
        for partition in range(PARTITIONS):
            for _ in range(2):
                lakes.raw_file(rng, partition, hour, rng.randrange(20, 60))
    skipped = {"events/README.txt", "events/year=2026/month=11/day=01/hour=22/notes.txt"}
    for key in skipped:
        lakes.put(key, b"not a raw file")
    # An archiver's name whose rows belong elsewhere: events of 22:xx in 23:xx's folder, another
    # partition's rows, offsets before its name's, and an empty file.
    wrong_hour = archive_key("", HOURS[2], 0, 10_000)
    lakes.put(wrong_hour, events_to_parquet([(0, 10_000, Event("u1", "click", HOURS[1] + 5, 1.0))]))
    other_partition = archive_key("", HOURS[2], 1, 10_000)
    lakes.put(other_partition, events_to_parquet([(2, 10_000, Event("u1", "click", HOURS[2] + 5, 1.0))]))
    early_offset = archive_key("", HOURS[3], 2, 10_000)
    lakes.put(early_offset, events_to_parquet([(2, 9_999, Event("u1", "click", HOURS[3] + 5, 1.0))]))
    empty = archive_key("", HOURS[4], 0, 20_000)
    lakes.put(empty, events_to_parquet([]))
    # No `value` column: not the raw schema for the embedded engine, null values for Spark.
    no_value = archive_key("", HOURS[4], 1, 20_000)
    table = pq.read_table(pa.BufferReader(events_to_parquet([(1, 20_000, Event("u1", "click", HOURS[4] + 5, 1.0))])))
    sink = pa.BufferOutputStream()
    pq.write_table(table.drop_columns(["value"]), sink)
    lakes.put(no_value, sink.getvalue().to_pybytes())
    return skipped | {wrong_hour, other_partition, early_offset, empty, no_value}


def late(lakes: Lakes) -> None:
    """Files arriving after their hour was computed: 21:xx a day late, 00:xx, each with a new type and users."""
    rng = random.Random(7)
    for partition in range(PARTITIONS):
        lakes.raw_file(rng, partition, HOURS[0], 3)
        lakes.raw_file(rng, partition, HOURS[3], 4)
    offset, at = lakes.next_offset[0], HOURS[3] + 60_000
    lakes.put(archive_key("", at, 0, offset), events_to_parquet([(0, offset, Event("late-user", "refund", at, 99.75))]))
    lakes.counted.append((HOURS[3], "late-user", "refund", 99.75))


def reference(counted: Iterable[Counted], hours: Iterable[int]) -> dict[tuple[str, int], list[RollupRow]]:
    """The rows of the given hours and their days, from the counted events, in plain Python."""
    chosen = set(hours)
    groups: dict[tuple[str, int, str], list[tuple[str, float]]] = {}
    days = {hour - hour % DAY_MS for hour in chosen}
    for hour, user, event_type, value in counted:
        if hour in chosen:
            groups.setdefault(("hourly", hour, event_type), []).append((user, value))
        if hour - hour % DAY_MS in days:
            groups.setdefault(("daily", hour - hour % DAY_MS, event_type), []).append((user, value))
    rows: dict[tuple[str, int], list[RollupRow]] = {}
    for (kind, start, event_type), items in sorted(groups.items()):
        values = [v for _, v in items]
        end = start + (HOUR_MS if kind == "hourly" else DAY_MS)
        rows.setdefault((kind, start), []).append(RollupRow(
            kind, start, end, event_type, len(values), math.fsum(values), min(values), max(values),
            len({u for u, _ in items}), *(nearest_rank(values, p) for p in (50, 95, 99))))
    return rows


def run_spark(lake: Path | str, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """The entry point as a user runs it (its own process, its own JVM); returns its lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run([sys.executable, "-m", "batch.spark_job", "--master", "local[2]", "--lake", str(lake),
                           *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SPARK_DEADLINE_S)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.splitlines()


def outputs(root: Path) -> dict[str, bytes]:
    return {key: (root / key).read_bytes() for key in DirectoryLake(root).list_etags("aggregated/")}


def assert_same_outputs(lakes: Lakes, expected: dict[tuple[str, int], list[RollupRow]]) -> None:
    embedded, spark = outputs(lakes.embedded), outputs(lakes.spark)
    assert sorted(spark) == sorted(embedded)
    by_period = {(rows[0].period, rows[0].period_start_ms): rows
                 for rows in (parquet_to_rollups(body) for body in embedded.values())}
    assert by_period == expected  # the embedded engine is right on this input
    for key, body in sorted(embedded.items()):
        assert parquet_to_rollups(spark[key]) == parquet_to_rollups(body), key  # row for row
        assert pq.read_schema(lakes.spark / key).equals(ROLLUP_SCHEMA, check_metadata=False), key
        assert spark[key] == body, key  # and byte for byte: same rows, same writer
    # The Spark job adds the rollups and nothing else: no part files, _SUCCESS or .crc.
    raw = set(DirectoryLake(lakes.spark).list_etags("events/"))
    assert set(DirectoryLake(lakes.spark).list_etags("")) == raw | set(spark)


def skipped_in(lines: list[str], root: Path | str) -> set[str]:
    prefix = f"warning: skipped {root}/" if isinstance(root, str) else f"warning: skipped file:{root}/"
    return {line.removeprefix(prefix).split(": ", 1)[0] for line in lines if line.startswith(prefix)}


def test_spark_rollups_equal_the_embedded_engine(tmp_path: Path) -> None:
    lakes = Lakes(tmp_path)
    foreign = on_time(lakes)
    say: list[str] = []
    first = run_batch(DirectoryLake(lakes.embedded), sealed_until_ms=SEALED_MS, plan=Plan(), say=say.append)
    assert len(first.processed) == len(HOURS) + 2
    late(lakes)
    second: RunReport = run_batch(DirectoryLake(lakes.embedded), sealed_until_ms=SEALED_MS, plan=Plan(),
                                  say=say.append)
    assert {p.start_ms for p in second.processed} == {HOURS[0], HOURS[3], START_MS - START_MS % DAY_MS,
                                                      HOURS[3] - HOURS[3] % DAY_MS}  # late files recomputed
    assert first.skipped | second.skipped == foreign

    lines = run_spark(lakes.spark, tmp_path)

    assert skipped_in(lines, lakes.spark) == foreign
    assert lines[-1] == f"spark batch: {len(HOURS)} hours and 2 days computed; {len(HOURS) + 2} objects written, " \
                        f"{len(foreign)} foreign objects skipped"
    assert_same_outputs(lakes, reference(lakes.counted, HOURS))


def test_spark_range_selects_the_embedded_engines_periods(tmp_path: Path) -> None:
    """--from/--to: the hours overlapping the range and their whole days, on a lake never computed."""
    lakes = Lakes(tmp_path)
    on_time(lakes)
    late(lakes)
    start, end = HOURS[2] + 30 * 60_000, HOURS[3]  # 23:30 to 00:00: hour 23 and day Nov 1
    report = run_batch(DirectoryLake(lakes.embedded), sealed_until_ms=SEALED_MS, plan=Plan(start, end),
                       say=lambda _line: None)
    assert [(p.kind, p.start_ms) for p in report.processed] == [("hourly", HOURS[2]),
                                                                  ("daily", START_MS - START_MS % DAY_MS)]

    lines = run_spark(lakes.spark, tmp_path, "--from", "2026-11-01T23:30Z", "--to", str(end))

    assert lines[-1].startswith("spark batch: 1 hour and 1 day computed; 2 objects written")
    assert_same_outputs(lakes, reference(lakes.counted, [HOURS[2]]))


def test_spark_job_refuses_a_bad_range(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "batch.spark_job", "--lake", str(tmp_path), "--from", "yesterday"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SPARK_DEADLINE_S)
    assert done.returncode == 2
    assert "invalid --from: expected" in done.stderr


# The s3a connector's jars (`make spark-jars`, devstack/spark/pom.xml): hadoop-aws at PySpark's Hadoop version
# and the AWS SDK bundle it was built with.
S3A_JARS = sorted((ROOT / "var" / "spark" / "jars").glob("*.jar"))


def s3a_env(stack: Endpoints) -> dict[str, str]:
    """Spark's settings for the embedded S3, as a user passes them to spark-submit (--jars, --conf); the
    credentials come from the environment, through the AWS SDK's default chain."""
    conf = {
        "spark.hadoop.fs.s3a.endpoint": stack.s3_endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": stack.credentials["AWS_DEFAULT_REGION"],
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        # The SDK signs an upload over plain HTTP chunk by chunk, which SeaweedFS without identities refuses
        # ("Signed request requires setting up SeaweedFS S3 authentication"); this signer sends it whole.
        "spark.hadoop.fs.s3a.s3.signing-algorithm": "AWS4UnsignedPayloadSignerType",
    }
    submit = ["--jars", ",".join(map(str, S3A_JARS)), *(f"--conf={k}={v}" for k, v in conf.items()), "pyspark-shell"]
    return {**stack.credentials, "PYSPARK_SUBMIT_ARGS": " ".join(submit)}


def upload(stack: Endpoints, root: Path, bucket: str, prefix: str) -> None:
    client = stack.s3_client()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=prefix + path.relative_to(root).as_posix(), Body=path.read_bytes())


def download(stack: Endpoints, bucket: str, prefix: str, root: Path) -> None:
    """Every object under `prefix`, as files under `root` (a key ending in / would fail here: no directory
    markers either)."""
    client = stack.s3_client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", ()):
            path = root / item["Key"].removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())


@pytest.mark.skipif(not S3A_JARS, reason="the s3a connector's jars are not in var/spark/jars: `make spark-jars`")
def test_spark_rollups_through_s3a_equal_the_embedded_engine(stack: Endpoints, unique_name: str,
                                                              tmp_path: Path) -> None:
    """The same lake in the embedded S3 (SeaweedFS), read and written by Spark through s3a (hadoop-aws): the
    objects it writes there are the embedded engine's, name for name and byte for byte."""
    lakes = Lakes(tmp_path)
    foreign = on_time(lakes)
    late(lakes)
    run_batch(DirectoryLake(lakes.embedded), sealed_until_ms=SEALED_MS, plan=Plan(), say=lambda _line: None)
    bucket, prefix = unique_name, "lake/"
    stack.s3_client().create_bucket(Bucket=bucket)
    upload(stack, lakes.spark, bucket, prefix)
    lake = f"s3a://{bucket}/{prefix.rstrip('/')}"

    lines = run_spark(lake, tmp_path, env=s3a_env(stack))

    assert skipped_in(lines, lake) == foreign
    assert lines[-1] == f"spark batch: {len(HOURS)} hours and 2 days computed; {len(HOURS) + 2} objects written, " \
                        f"{len(foreign)} foreign objects skipped"
    shutil.rmtree(lakes.spark)
    download(stack, bucket, prefix, lakes.spark)  # what Spark left in the bucket, every object
    assert_same_outputs(lakes, reference(lakes.counted, HOURS))
