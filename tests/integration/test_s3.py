"""Real S3 (SeaweedFS): put, list and get a Parquet object, read it back with pyarrow."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from devstack.stack import Endpoints

SCHEMA = pa.schema([
    ("window_start", pa.timestamp("ms", tz="UTC")),
    ("event_type", pa.string()),
    ("count", pa.int64()),
    ("sum", pa.float64()),
])


def _table() -> pa.Table:
    start = datetime(2025, 11, 15, 23, 59, tzinfo=timezone.utc)
    return pa.table({
        "window_start": [start, start],
        "event_type": ["click", "../=/\x00é"],
        "count": [3, 1],
        "sum": [4.5, -0.25],
    }, schema=SCHEMA)


def test_parquet_roundtrip(stack: Endpoints, unique_name: str) -> None:
    creds = stack.credentials
    s3 = stack.s3_client()
    bucket = unique_name
    s3.create_bucket(Bucket=bucket)
    key = "aggregated/tumbling_1m/year=2025/month=11/day=15/hour=23/part-0.parquet"
    buffer = io.BytesIO()
    pq.write_table(_table(), buffer)
    s3.put_object(Bucket=bucket, Key=key, Body=buffer.getvalue())

    listed = s3.list_objects_v2(Bucket=bucket, Prefix="aggregated/")
    assert [obj["Key"] for obj in listed["Contents"]] == [key]

    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body == buffer.getvalue()
    read_back = pq.read_table(io.BytesIO(body))
    assert read_back.schema.equals(SCHEMA)
    assert read_back.to_pylist() == _table().to_pylist()

    # The way analysts read the lake: pyarrow's own S3 filesystem and Hive partitions.
    fs = pafs.S3FileSystem(endpoint_override=stack.s3_endpoint, access_key=creds["AWS_ACCESS_KEY_ID"],
                           secret_key=creds["AWS_SECRET_ACCESS_KEY"], region=creds["AWS_DEFAULT_REGION"])
    dataset = pq.read_table(f"{bucket}/aggregated/tumbling_1m", filesystem=fs, partitioning="hive")
    assert dataset.column("event_type").to_pylist() == ["click", "../=/\x00é"]
    assert dataset.column("hour").to_pylist() == [23, 23]
