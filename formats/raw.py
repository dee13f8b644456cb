"""The raw archive's files: every valid event, as Parquet of RAW_SCHEMA (RAW_FORMAT 1).

One file per (input partition, first offset), named by formats/lake.py; rows in offset order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

from formats.events import Event, EventColumns
from formats.parquet import TIMESTAMP_MS_UTC, read_parquet, table_of, write_parquet

__all__ = ["RAW_FORMAT", "RAW_SCHEMA", "event_columns_to_parquet", "events_to_parquet", "parquet_to_events",
           "read_raw_table"]

RAW_FORMAT: Final = 1

RAW_SCHEMA: Final = pa.schema([
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("user_id", pa.string()),
    ("event_type", pa.string()),
    ("timestamp", TIMESTAMP_MS_UTC),
    ("value", pa.float64()),
])


def events_to_parquet(records: Sequence[tuple[int, int, Event]]) -> bytes:
    """A Parquet file of RAW_SCHEMA from (partition, offset, Event) records, in offset order."""
    if isinstance(records, EventColumns):
        return event_columns_to_parquet(records)
    ordered = sorted(records, key=lambda record: (record[0], record[1]))
    events = [record[2] for record in ordered]
    return _raw_parquet(pa.array([record[0] for record in ordered], type=pa.int32()),
                        [record[1] for record in ordered], [e.user_id for e in events],
                        [e.event_type for e in events], [e.event_ms for e in events],
                        [float(e.value) for e in events])


def event_columns_to_parquet(columns: EventColumns) -> bytes:
    """events_to_parquet of one partition's valid events, in increasing offset order, as columns
    (the raw archive builds them as records arrive, so no Python loop runs here)."""
    return _raw_parquet(pa.repeat(pa.scalar(columns.partition, type=pa.int32()), len(columns)), columns.offsets,
                        columns.user_ids, columns.event_types, columns.event_ms, columns.values)


def _raw_parquet(partitions: pa.Array, offsets: list[int], user_ids: list[str], event_types: list[str],
                 event_ms: list[int], values: list[float]) -> bytes:
    table = table_of(RAW_SCHEMA, [partitions, offsets, user_ids, event_types, event_ms, values])
    return write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(1)])


def read_raw_table(data: bytes) -> pa.Table:
    """A raw archive file as a table of RAW_SCHEMA; ValueError (or pyarrow's ArrowException) if it is
    not one."""
    return read_parquet(data, RAW_SCHEMA, "raw event archive")


def parquet_to_events(data: bytes) -> list[tuple[int, int, Event]]:
    """Inverse of events_to_parquet."""
    table = read_raw_table(data)
    column = table.column
    return [
        (partition, offset, Event(user_id=user_id, event_type=event_type, event_ms=event_ms, value=value))
        for partition, offset, user_id, event_type, event_ms, value in zip(
            column("partition").to_pylist(),
            column("offset").to_pylist(),
            column("user_id").to_pylist(),
            column("event_type").to_pylist(),
            column("timestamp").cast(pa.int64()).to_pylist(),
            column("value").to_pylist(),
            strict=True,
        )
    ]
