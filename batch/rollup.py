"""The engine: one rollup row per event type of a period (or per key of a spec's aggregation), computed by DuckDB
over a stream of Arrow record batches (one raw file at a time, so memory holds one file plus the aggregates'
state: for the exact percentiles and distinct counts, every value and distinct user of the period).

Definitions, which docs/batch-layer.md and the tests' reference share:
* count, min, max; sum by compensated (Kahan-Babuska) summation, on one thread in the lake's
  order, so the same input gives the same bits; mean = sum / count;
* distinct_users: the exact number of distinct user_id;
* p50, p95, p99: nearest rank. The p-th percentile of n sorted values v[1..n] is v[ceil(p·n/100)]:
  the smallest value with at least p% of the values at or below it; always an observed value.
  (DuckDB's quantile_disc; checked against that formula in tests/unit/test_batch_rollup.py.)

Measured on this machine (1M raw events in 20 files, 8 types, 100k users; files in memory, so no
S3 time): DuckDB streaming over Arrow batches 2.1-2.6M events/s on one thread (3-4M on two), and
pyarrow's group_by plus a sort for the percentiles 0.6-1.1M events/s.
"""

from __future__ import annotations

from typing import Final

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from batch.periods import Period
from formats.batch import AggregateRollupLayout, RollupRow

__all__ = ["aggregation_rollup", "rollup"]

_PERCENTILES: Final = ("p50", "p95", "p99")

_QUERY: Final = """
SELECT event_type, count(*), fsum(value), min(value), max(value), count(DISTINCT user_id),
       quantile_disc(value, [0.5, 0.95, 0.99])
FROM events GROUP BY event_type
"""


def rollup(period: Period, events: pa.RecordBatchReader) -> list[RollupRow]:
    """The rows of `period` from a stream of (user_id, event_type, value) batches, sorted by event type."""
    connection = duckdb.connect(config={"threads": 1})  # one thread: deterministic sums
    try:
        connection.register("events", events)
        results = connection.execute(_QUERY).fetchall()
    finally:
        connection.close()
    rows = [RollupRow(period.kind, period.start_ms, period.end_ms, event_type, int(count), float(total),
                      float(low), float(high), int(users), float(p50), float(p95), float(p99))
            for event_type, count, total, low, high, users, (p50, p95, p99) in results]
    return sorted(rows, key=lambda row: row.event_type)


def aggregation_rollup(period: Period, layout: AggregateRollupLayout, events: pa.Table) -> pa.Table | None:
    """The rollup of a spec's aggregation over `period` from its counted events (batch/judging.event_table):
    one row per key (the layout's columns, rows by key, nulls first), with the definitions above per
    measure (a measure's statistics over the events that had it) and exact distinct counts of the
    distinct fields (nulls not counted). None when no event counted."""
    if not events.num_rows:
        return None
    keys = ", ".join(f"k{i}" for i in range(len(layout.key)))
    selected = [keys, "count(*) AS events"]
    selected += [f"count(m{i}), fsum(m{i}), min(m{i}), max(m{i}), quantile_disc(m{i}, [0.5, 0.95, 0.99])"
                 for i in range(len(layout.measures))]
    selected += [f"count(DISTINCT d{i})" for i in range(len(layout.distinct))]
    order = ", ".join(f"k{i} NULLS FIRST" for i in range(len(layout.key)))
    connection = duckdb.connect(config={"threads": 1})  # one thread: deterministic sums
    try:
        connection.register("events", events)
        result = connection.sql(f"SELECT {', '.join(selected)} FROM events GROUP BY {keys} "
                                f"ORDER BY {order}").to_arrow_table()
    finally:
        connection.close()
    rows = result.num_rows
    columns: dict[str, pa.Array | pa.ChunkedArray] = {
        "period_start": pa.repeat(pa.scalar(period.start_ms), rows),
        "period_end": pa.repeat(pa.scalar(period.end_ms), rows),
        "period": pa.repeat(pa.scalar(period.kind), rows)}
    at = 0
    for column, _ in layout.key:
        columns[column] = result.column(at)
        at += 1
    columns["events"] = result.column(at)
    at += 1
    for measure in layout.measures:
        count = result.column(at)
        present = pc.greater(count, 0)
        total = pc.if_else(present, result.column(at + 1).cast(pa.float64()), None)
        columns[f"{measure}_count"] = count
        columns[f"{measure}_sum"] = total
        columns[f"{measure}_min"] = result.column(at + 2)
        columns[f"{measure}_max"] = result.column(at + 3)
        columns[f"{measure}_mean"] = pc.divide(total, count.cast(pa.float64()))
        for i, name in enumerate(_PERCENTILES):
            columns[f"{measure}_{name}"] = pc.list_element(result.column(at + 4), i)
        at += 5
    for field in layout.distinct:
        columns[f"{field}_distinct"] = result.column(at)
        at += 1
    schema = layout.schema()
    return pa.table({name: columns[name] for name in schema.names}).cast(schema)
