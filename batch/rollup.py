"""The engine: one rollup row per event type of a period, computed by DuckDB over a stream of
Arrow record batches (one raw file at a time, so memory holds one file plus the aggregates'
state: for the exact percentiles and distinct counts, every value and distinct user of the period).

Definitions, which the README and the tests' reference share:
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

from batch.periods import Period
from formats.batch import RollupRow

__all__ = ["rollup"]

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
