"""S3Lake against the real embedded S3 (SeaweedFS): one fresh bucket per test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import boto3
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from devstack.ports import free_port_block
from devstack.stack import Endpoints
from formats.aggregates import AggregateColumns, AggregateLayout, AggregateRow, MeasureStats, parquet_to_aggregate_rows
from formats.events import Event
from formats.raw import RawColumns, parquet_to_events, parquet_to_raw
from formats.rows import WindowRow, parquet_to_rows, rows_to_parquet
from sinks.lake import ArchiveOutcome, S3Lake, make_s3_client_factory
from sinks.policy import S3BucketNotFoundError, SinkUnavailableError
from sinks.ranking import ObjectCache, read_top_keys
from testing.reference import exact

START_MS = 1763251170000  # 2025-11-15T23:59:30Z
HOUR_DIRS = "year=2025/month=11/day=15/hour=23"


@pytest.fixture
def aws_env(stack: Endpoints, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials the way production gets them: the default AWS chain (environment)."""
    for name, value in stack.credentials.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def s3(stack: Endpoints, aws_env: None) -> Iterator[Any]:
    client = boto3.session.Session().client("s3", endpoint_url=stack.s3_endpoint)
    yield client
    client.close()


@pytest.fixture
def bucket(s3: Any, unique_name: str) -> str:
    s3.create_bucket(Bucket=unique_name)
    return unique_name


@pytest.fixture
def lake(stack: Endpoints, aws_env: None, bucket: str) -> Iterator[S3Lake]:
    lake = S3Lake(bucket, "lake/", make_s3_client_factory(stack.s3_endpoint, "us-east-1"))
    lake.open()
    yield lake
    lake.close()


def window_rows() -> list[WindowRow]:
    types = ["click", "a:b*", "../=/x", "line\nbreak", "😀" * 200]
    return [
        WindowRow("tumbling_1m", START_MS, START_MS + 60_000, event_type, i + 1, total, -0.0 if i else -1e308, 1e308)
        for i, (event_type, total) in enumerate(zip(types, [-0.0, 0.1 + 0.2, 1.7976931348623157e308, 5e-324, 7.25],
                                                     strict=True))
    ]


def events(partition: int, offsets: range, tag: str) -> list[tuple[int, int, Event]]:
    return [(partition, offset, Event(f"{tag}-{offset}", "click", START_MS + offset, float(offset)))
            for offset in offsets]


def keys(s3: Any, bucket: str) -> list[str]:
    return [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_put_aggregates_round_trip(lake: S3Lake, s3: Any, bucket: str, stack: Endpoints) -> None:
    rows = window_rows()
    key = lake.put_aggregates("tumbling_1m", START_MS, 0, rows)

    assert key == f"lake/aggregated/tumbling_1m/{HOUR_DIRS}/tumbling_1m-{START_MS}-part0000.parquet"
    assert keys(s3, bucket) == [key]
    obj = s3.get_object(Bucket=bucket, Key=key)
    assert obj["ContentType"] == "application/vnd.apache.parquet"
    assert exact(parquet_to_rows(obj["Body"].read())) == exact(sorted(rows, key=lambda r: r.event_type))

    # Analysts' view: a Hive-partitioned dataset through pyarrow's own S3 filesystem.
    creds = stack.credentials
    fs = pafs.S3FileSystem(endpoint_override=stack.s3_endpoint, access_key=creds["AWS_ACCESS_KEY_ID"],
                           secret_key=creds["AWS_SECRET_ACCESS_KEY"], region=creds["AWS_DEFAULT_REGION"])
    table = pq.read_table(f"{bucket}/lake/aggregated/tumbling_1m", filesystem=fs, partitioning="hive")
    assert table.column_names[-4:] == ["year", "month", "day", "hour"]
    assert table.column("hour").to_pylist() == [23] * 5
    assert table.column("event_type").to_pylist() == ["../=/x", "a:b*", "click", "line\nbreak", "😀" * 200]
    assert table.column("count").to_pylist() == [3, 2, 1, 4, 5]


def test_rewriting_a_window_leaves_one_identical_object(lake: S3Lake, s3: Any, bucket: str) -> None:
    rows = window_rows()
    first_key = lake.put_aggregates("tumbling_1m", START_MS, 0, rows)
    first = s3.get_object(Bucket=bucket, Key=first_key)
    first_body = first["Body"].read()

    second_key = lake.put_aggregates("tumbling_1m", START_MS, 0, list(reversed(rows)))
    second = s3.get_object(Bucket=bucket, Key=second_key)

    assert second_key == first_key
    assert keys(s3, bucket) == [first_key]
    assert second["Body"].read() == first_body == rows_to_parquet(rows)
    assert second["ETag"] == first["ETag"]


def test_archive_replay_never_duplicates_or_loses_a_row(lake: S3Lake, s3: Any, bucket: str) -> None:
    # A first run archives offsets 100..102, then crashes before committing its offsets.
    crashed = lake.put_archive(1, 100, events(1, range(100, 103), "first"))
    key = f"lake/events/{HOUR_DIRS}/part-00001-00000000000000000100.parquet"
    assert crashed == ArchiveOutcome(key=key, end_offset=102, written=True)

    # The replay restarts at the committed offset 100 with a bigger batch (other file boundary).
    replay = lake.put_archive(1, 100, events(1, range(100, 106), "replay"))
    assert replay == ArchiveOutcome(key=key, end_offset=102, written=False)
    stored = s3.get_object(Bucket=bucket, Key=key)
    assert stored["Metadata"] == {"end-offset": "102", "records": "3"}
    assert parquet_to_events(stored["Body"].read()) == events(1, range(100, 103), "first")

    # Contract: drop offsets <= end_offset, start the next file at end_offset + 1.
    rest = [record for record in events(1, range(100, 106), "replay") if record[1] > replay.end_offset]
    follow = lake.put_archive(1, replay.end_offset + 1, rest)
    next_key = f"lake/events/{HOUR_DIRS}/part-00001-00000000000000000103.parquet"
    assert follow == ArchiveOutcome(key=next_key, end_offset=105, written=True)

    archived = [record for k in keys(s3, bucket)
                for record in parquet_to_events(s3.get_object(Bucket=bucket, Key=k)["Body"].read())]
    assert keys(s3, bucket) == [key, next_key]
    assert [offset for _, offset, _ in archived] == [100, 101, 102, 103, 104, 105]
    assert [event.user_id for _, _, event in archived] == [
        "first-100", "first-101", "first-102", "replay-103", "replay-104", "replay-105"]


def test_a_specs_raw_records_are_archived_as_written(lake: S3Lake, s3: Any, bucket: str) -> None:
    records = RawColumns(2, [7, 8], [START_MS, START_MS + 1], [b'{"device": {"id": "d-1"}}', b'{"t\\u00e9": 1}'])
    outcome = lake.put_archive(2, 7, records)
    assert outcome.written and outcome.end_offset == 8
    stored = s3.get_object(Bucket=bucket, Key=outcome.key)
    assert stored["Metadata"] == {"end-offset": "8", "records": "2"}
    again = parquet_to_raw(stored["Body"].read())
    assert (again.partition, again.offsets, again.event_ms, again.raws) == (2, [7, 8], records.event_ms, records.raws)
    assert lake.put_archive(2, 7, records).written is False


def test_a_specs_rows_go_to_their_aggregations_folder(lake: S3Lake, s3: Any, bucket: str) -> None:
    layout = AggregateLayout(key=(("device_id", "string"),), measures=("temp",))
    rows = [AggregateRow("devices", "tumbling_1m", START_MS, START_MS + 60_000, (d,), (MeasureStats(1, 2.5, 2.5, 2.5),))
            for d in ("d-2", "d-1")]
    key = lake.put_aggregate_columns(AggregateColumns.of_rows(rows, layout), 3, layout)
    assert key == f"lake/aggregated/devices/tumbling_1m/{HOUR_DIRS}/tumbling_1m-{START_MS}-part0003.parquet"
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert parquet_to_aggregate_rows(body, "devices", layout) == rows[::-1]
    assert lake.put_aggregate_columns(AggregateColumns.of_rows(rows, layout), 3, layout) == key  # replaced whole
    assert keys(s3, bucket) == [key]


def test_the_top_keys_of_the_newest_window_found_by_walking_the_folders(lake: S3Lake) -> None:
    """sinks/ranking.py on the real S3: the folder listing (Delimiter) finds the newest window days back."""
    layout = AggregateLayout(key=(("device_id", "string"),), measures=("temp",))
    starts = (START_MS - 86_400_000, START_MS, START_MS + 30_000)  # a day before, 23:59:30, 00:00 the next day

    def rows(start: int) -> list[AggregateRow]:
        return [AggregateRow("devices", "tumbling_1m", start, start + 60_000, (f"d-{d}",),
                             (MeasureStats(d + 1, 10.0 * d + start % 7, 0.0, 9.0),)) for d in range(6)]

    for start in starts:
        lake.put_aggregate_columns(AggregateColumns.of_rows(rows(start)[::2], layout), 0, layout)
        lake.put_aggregate_columns(AggregateColumns.of_rows(rows(start)[1::2], layout), 1, layout)
    folder = "lake/aggregated/devices/tumbling_1m/"
    assert lake.list_folders(folder) == [f"{folder}year=2025/"]
    assert lake.list_folders(f"{folder}year=2025/month=11/") == [f"{folder}year=2025/month=11/day={d}/"
                                                                 for d in (14, 15, 16)]
    for newest, found in ((START_MS + 7 * 86_400_000, starts[2]), (START_MS + 29_999, starts[1]),
                          (START_MS - 1, starts[0])):
        top = read_top_keys(lake, ObjectCache(), "devices", layout, "tumbling_1m", newest, "temp", "sum", True, 3)
        assert (top.window_start_ms, top.parts, top.keys) == (found, 2, 6)
        assert top.rows == sorted(rows(found), key=lambda row: -row.measures[0].sum)[:3]  # type: ignore[union-attr]


def test_missing_bucket_is_bucket_not_found(stack: Endpoints, aws_env: None, unique_name: str) -> None:
    lake = S3Lake(unique_name, "", make_s3_client_factory(stack.s3_endpoint, "us-east-1"))
    lake.open()
    try:
        with pytest.raises(S3BucketNotFoundError) as raised:
            lake.put_aggregates("tumbling_1m", START_MS, 0, window_rows())
        assert str(raised.value) == (
            f"S3 bucket '{unique_name}' does not exist (put of s3://{unique_name}/aggregated/tumbling_1m/"
            f"{HOUR_DIRS}/tumbling_1m-{START_MS}-part0000.parquet)"
        )
        with pytest.raises(S3BucketNotFoundError, match=f"S3 bucket '{unique_name}' does not exist"):
            lake.put_archive(0, 0, events(0, range(0, 2), "x"))
    finally:
        lake.close()


def test_unreachable_endpoint_is_unavailable_quickly(stack: Endpoints, aws_env: None, unique_name: str) -> None:
    port = free_port_block(1)
    factory = make_s3_client_factory(f"http://127.0.0.1:{port}", "us-east-1", connect_timeout_s=1, read_timeout_s=1)
    lake = S3Lake(unique_name, "", factory)
    lake.open()
    try:
        began = time.monotonic()
        with pytest.raises(SinkUnavailableError) as raised:
            lake.put_archive(0, 7, events(0, range(7, 9), "x"))
        elapsed_s = time.monotonic() - began
    finally:
        lake.close()
    key = f"events/{HOUR_DIRS}/part-00000-00000000000000000007.parquet"
    assert str(raised.value) == f"S3 conditional put of s3://{unique_name}/{key} failed: EndpointConnectionError"
    # No hidden botocore retries with backoff: one refused connection, then the error.
    assert elapsed_s < 2.0
    assert stack.credentials["AWS_SECRET_ACCESS_KEY"] not in str(raised.value)
