"""Reading the batch layer's hourly and daily rollups back from the lake (GET /v1/rollups/..., and a
spec's aggregation's for GET /v1/aggregations/{aggregation}/rollups/...).

One object per period (sinks/lake.py ``rollup_key``), so a range is read as: list the folders
it spans (a day of hourly objects, a month of daily ones), then GET the objects of its periods
that exist, several at a time. A period without an object has no event (or is not computed
yet). An object that does not decode as a rollup file is left out and named in ``skipped``,
so one bad object does not hide the others.

Blocking (S3 calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from formats.batch import AggregateRollupLayout, RollupRow, parquet_to_aggregate_rollup, parquet_to_rollups
from formats.lake import PERIOD_MS, rollup_folders, rollup_key, spec_rollup_key
from sinks.lake import LakeReader, get_objects

__all__ = ["AggregateRollupRead", "RollupRead", "read_aggregate_rollups", "read_rollups"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RollupRead:
    rows: list[RollupRow]  # by (period_start, event_type)
    skipped: list[str] = field(default_factory=list)  # keys of objects that are not rollup files


def read_rollups(lake: LakeReader, period: str, from_ms: int, to_ms: int) -> RollupRead:
    """The rows of the `period` ("hourly" or "daily") periods overlapping [from_ms, to_ms)."""
    length = PERIOD_MS[period]
    starts = range(from_ms - from_ms % length, to_ms, length)
    if not starts:
        return RollupRead([])
    listed: set[str] = set()
    for folder in rollup_folders(lake.prefix, period, starts[0], starts[-1]):
        listed.update(lake.list_etags(folder))
    keys = [key for key in (rollup_key(lake.prefix, period, start) for start in starts) if key in listed]
    bodies = get_objects(lake, keys)
    rows: list[RollupRow] = []
    skipped = []
    for key, body in zip(keys, bodies, strict=True):
        try:
            rows.extend(parquet_to_rollups(body))
        except ValueError as exc:
            log.warning("rollups: s3://%s/%s is not a rollup file (%s): left out", lake.bucket, key, exc)
            skipped.append(key)
    rows.sort(key=lambda row: (row.period_start_ms, row.event_type))
    return RollupRead(rows, skipped)


@dataclass(frozen=True, slots=True)
class AggregateRollupRead:
    rows: list[dict[str, Any]]  # the layout's columns, times in epoch ms; by period start, then key
    skipped: list[str] = field(default_factory=list)


def read_aggregate_rollups(lake: LakeReader, aggregation: str, layout: AggregateRollupLayout, period: str,
                           from_ms: int, to_ms: int) -> AggregateRollupRead:
    """The rows of a spec's aggregation's `period` rollups overlapping [from_ms, to_ms)."""
    length = PERIOD_MS[period]
    starts = range(from_ms - from_ms % length, to_ms, length)
    if not starts:
        return AggregateRollupRead([])
    listed: set[str] = set()
    for folder in rollup_folders(lake.prefix, period, starts[0], starts[-1], aggregation):
        listed.update(lake.list_etags(folder))
    keys = [key for key in (spec_rollup_key(lake.prefix, aggregation, period, start) for start in starts)
            if key in listed]
    bodies = get_objects(lake, keys)
    rows: list[dict[str, Any]] = []
    skipped = []
    for key, body in zip(keys, bodies, strict=True):  # keys in period order; rows by key within each
        try:
            table = parquet_to_aggregate_rollup(body, layout)
        except (ValueError, pa.ArrowException) as exc:
            log.warning("rollups: s3://%s/%s is not a rollup file of %s (%s): left out", lake.bucket, key,
                        aggregation, exc)
            skipped.append(key)
            continue
        for i in (0, 1):
            table = table.set_column(i, table.schema.names[i], table.column(i).cast(pa.int64()))
        rows.extend(table.to_pylist())
    return AggregateRollupRead(rows, skipped)
