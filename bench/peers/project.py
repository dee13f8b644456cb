"""This project's closed windows, read back from the lake as the peers' rows, for the same check."""

from __future__ import annotations

from typing import Any

from bench.peers.job import HOP_MS, HOPPING, SIZE_MS, TUMBLING, WindowRow
from formats.lake import parse_aggregate_key
from formats.rows import parquet_to_rows
from tables.windows import DEFAULT_WINDOWS, parse_windows


def job_window_names() -> dict[str, str]:
    """The worker's default window names -> the peers' names for the same (size, step)."""
    by_shape = {(SIZE_MS, SIZE_MS): TUMBLING, (SIZE_MS, HOP_MS): HOPPING}
    return {spec.name: by_shape[(spec.size_ms, spec.step_ms)] for spec in parse_windows(DEFAULT_WINDOWS)}


def lake_rows(s3: Any, bucket: str) -> list[WindowRow]:
    """Every speed-layer window row under `s3://bucket/aggregated/` (the worker's LAKE_URL is the bucket)."""
    names = job_window_names()
    rows = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="aggregated/"):
        for item in page.get("Contents", []):
            if parse_aggregate_key("", item["Key"]) is None:
                continue
            body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
            rows.extend(WindowRow(names[row.window], row.window_start_ms, row.event_type, row.count, row.sum,
                                  row.min, row.max, row.mean) for row in parquet_to_rows(body))
    return rows
