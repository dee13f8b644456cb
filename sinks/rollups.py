"""Reading the batch layer's hourly and daily rollups back from the lake (GET /v1/rollups/..., and a
spec's aggregation's for GET /v1/aggregations/{aggregation}/rollups/...).

One object per period (sinks/lake.py ``rollup_key``), so a range is read as: list the folders
it spans (a day of hourly objects, a month of daily ones; a listing is reused for LISTING_TTL_S),
then GET the objects of its periods that exist and are not cached by ETag, several at a time. A
period without an object has no event (or is not computed yet). An object that does not decode as
a rollup file is left out and named in ``skipped``, so one bad object does not hide the others.

Blocking (S3 calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pyarrow as pa
import pyarrow.compute as pc

from formats.batch import AggregateRollupLayout, RollupRow, parquet_to_aggregate_rollup, parquet_to_rollups
from formats.lake import PERIOD_MS, rollup_folders, rollup_key, spec_rollup_key
from sinks.lake import LakeReader, ListingCache, ObjectCache, decoded_objects

__all__ = ["AggregateRollupRead", "RollupRead", "read_aggregate_rollups", "read_rollups"]

log = logging.getLogger(__name__)
ROLLUP_ROW_BYTES: Final = 400  # about what one decoded RollupRow holds, to weigh a cached object


@dataclass(frozen=True, slots=True)
class RollupRead:
    rows: list[RollupRow]  # by (period_start, event_type), at most the limit asked for
    skipped: list[str] = field(default_factory=list)  # keys of objects that are not rollup files
    truncated: bool = False  # the range has more rows than the limit


def _listed(lake: LakeReader, listings: ListingCache, folders: Sequence[str],
            keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """`keys` that exist (one LIST per folder, unless listed less than LISTING_TTL_S ago), in their order, and
    their ETags."""
    etags: dict[str, str] = {}
    for folder in folders:
        etags.update(listings.list_etags(lake, folder))
    return [key for key in keys if key in etags], etags


def read_rollups(lake: LakeReader, cache: ObjectCache[list[RollupRow]], listings: ListingCache, period: str,
                 from_ms: int, to_ms: int, event_type: str | None, limit: int) -> RollupRead:
    """The first `limit` rows (of `event_type` only, if given) of the `period` ("hourly" or "daily") periods
    overlapping [from_ms, to_ms)."""
    length = PERIOD_MS[period]
    starts = range(from_ms - from_ms % length, to_ms, length)
    if not starts:
        return RollupRead([])
    keys, etags = _listed(lake, listings, rollup_folders(lake.prefix, period, starts[0], starts[-1]),
                          [rollup_key(lake.prefix, period, start) for start in starts])
    rows: list[RollupRow] = []
    skipped = []
    for key, value in decoded_objects(lake, cache, keys, etags, parquet_to_rollups,
                               lambda decoded: len(decoded) * ROLLUP_ROW_BYTES):
        if isinstance(value, Exception):
            log.warning("rollups: s3://%s/%s is not a rollup file (%s): left out", lake.bucket, key, value)
            skipped.append(key)
            continue
        rows.extend(row for row in value if event_type is None or row.event_type == event_type)
        if len(rows) > limit:
            break  # one object is one period, and the keys are in period order: the rest come after
    rows.sort(key=lambda row: (row.period_start_ms, row.event_type))
    return RollupRead(rows[:limit], skipped, len(rows) > limit)


@dataclass(frozen=True, slots=True)
class AggregateRollupRead:
    rows: list[dict[str, Any]]  # the layout's columns, times in epoch ms; by period start, then key
    skipped: list[str] = field(default_factory=list)
    truncated: bool = False  # the range has more rows matching the key than the limit


def read_aggregate_rollups(lake: LakeReader, cache: ObjectCache[pa.Table], listings: ListingCache, aggregation: str,
                           layout: AggregateRollupLayout, period: str, from_ms: int, to_ms: int,
                           key: Mapping[str, Any], limit: int) -> AggregateRollupRead:
    """The first `limit` rows whose key parts equal `key`'s (column -> part; None matches a null part) of a
    spec's aggregation's `period` rollups overlapping [from_ms, to_ms)."""
    length = PERIOD_MS[period]
    starts = range(from_ms - from_ms % length, to_ms, length)
    if not starts:
        return AggregateRollupRead([])
    keys, etags = _listed(lake, listings, rollup_folders(lake.prefix, period, starts[0], starts[-1], aggregation),
                          [spec_rollup_key(lake.prefix, aggregation, period, start) for start in starts])

    def decode(body: bytes) -> pa.Table:
        table = parquet_to_aggregate_rollup(body, layout)
        for i in (0, 1):
            table = table.set_column(i, table.schema.names[i], table.column(i).cast(pa.int64()))
        return table

    rows: list[dict[str, Any]] = []
    skipped = []
    for object_key, value in decoded_objects(lake, cache, keys, etags, decode, lambda table: table.nbytes):
        if isinstance(value, Exception):
            log.warning("rollups: s3://%s/%s is not a rollup file of %s (%s): left out", lake.bucket, object_key,
                        aggregation, value)
            skipped.append(object_key)
            continue
        table = value
        for column, part in key.items():  # keys in period order; rows by key within each
            column_values = table.column(column)
            table = table.filter(pc.is_null(column_values) if part is None else pc.equal(column_values, part))
        rows.extend(table.slice(0, limit + 1 - len(rows)).to_pylist())
        if len(rows) > limit:
            break
    return AggregateRollupRead(rows[:limit], skipped, len(rows) > limit)
