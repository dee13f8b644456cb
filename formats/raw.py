"""The raw archive's files: every valid event, one file per (input partition, first offset), named by
formats/lake.py; rows in offset order.

* RAW_FORMAT 1, RAW_SCHEMA: the article's events, their fields as columns (user_id, event_type,
  timestamp, value).
* RAW_FORMAT 2, RAW_SPEC_SCHEMA: a spec's events (aggregations/spec.py), the original record (``raw``,
  its JSON as written) and its event time, so that the batch layer can judge them again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from formats.events import Event, EventColumns
from formats.parquet import TIMESTAMP_MS_UTC, read_parquet, table_of, write_parquet

__all__ = ["RAW_FORMAT", "RAW_SCHEMA", "RAW_SPEC_SCHEMA", "RawColumns", "event_columns_to_parquet",
           "events_to_parquet", "parquet_to_events", "parquet_to_raw", "raw_columns_to_parquet", "read_raw_records",
           "read_raw_table"]

RAW_FORMAT: Final = 2  # the newest: 1 for the article's events, 2 for a spec's

RAW_SCHEMA: Final = pa.schema([
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("user_id", pa.string()),
    ("event_type", pa.string()),
    ("timestamp", TIMESTAMP_MS_UTC),
    ("value", pa.float64()),
])


RAW_SPEC_SCHEMA: Final = pa.schema([
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("timestamp", TIMESTAMP_MS_UTC),
    ("raw", pa.binary()),
])


class RawColumns:
    """A spec's events of one partition in offset order, column by column (the rows of RAW_SPEC_SCHEMA):
    as a Sequence, (partition, offset, raw) records, as EventColumns reads as (partition, offset, Event)."""

    __slots__ = ("event_ms", "offsets", "partition", "raws")

    def __init__(self, partition: int, offsets: list[int] | None = None, event_ms: list[int] | None = None,
                 raws: list[bytes] | None = None) -> None:
        self.partition = partition
        self.offsets: list[int] = offsets if offsets is not None else []
        self.event_ms: list[int] = event_ms if event_ms is not None else []
        self.raws: list[bytes] = raws if raws is not None else []

    def append(self, offset: int, event_ms: int, raw: bytes) -> None:
        self.offsets.append(offset)
        self.event_ms.append(event_ms)
        self.raws.append(raw)

    def extend(self, other: RawColumns, start: int = 0, stop: int | None = None) -> None:
        """Append other's rows [start, stop)."""
        self.offsets += other.offsets[start:stop]
        self.event_ms += other.event_ms[start:stop]
        self.raws += other.raws[start:stop]

    def tail(self, start: int) -> RawColumns:
        return RawColumns(self.partition, self.offsets[start:], self.event_ms[start:], self.raws[start:])

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, index: int) -> tuple[int, int, bytes]:
        return self.partition, self.offsets[index], self.raws[index]


def raw_columns_to_parquet(columns: RawColumns) -> bytes:
    """A Parquet file of RAW_SPEC_SCHEMA (RAW_FORMAT 2) from a spec's events of one partition."""
    table = table_of(RAW_SPEC_SCHEMA, [pa.repeat(pa.scalar(columns.partition, type=pa.int32()), len(columns)),
                                       columns.offsets, columns.event_ms, columns.raws])
    return write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(1)])


def parquet_to_raw(data: bytes) -> RawColumns:
    """Inverse of raw_columns_to_parquet (a file of one partition)."""
    table = read_parquet(data, RAW_SPEC_SCHEMA, "raw archive of a spec's events")
    partitions = table.column("partition").to_pylist()
    return RawColumns(partitions[0] if partitions else 0, table.column("offset").to_pylist(),
                      table.column("timestamp").cast(pa.int64()).to_pylist(), table.column("raw").to_pylist())


def events_to_parquet(records: Sequence[tuple[int, int, Event]] | RawColumns) -> bytes:
    """A Parquet file of RAW_SCHEMA from (partition, offset, Event) records, in offset order (RAW_FORMAT 1),
    or of RAW_SPEC_SCHEMA from a spec's RawColumns (RAW_FORMAT 2)."""
    if isinstance(records, RawColumns):
        return raw_columns_to_parquet(records)
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


def read_raw_records(data: bytes) -> pa.Table:
    """A raw archive file of either format as a table of RAW_SPEC_SCHEMA, the records a spec judges: a
    format-2 file as it is; a format-1 file's events as the article's JSON records (user_id, event_type,
    timestamp in epoch ms, value), so that a spec added to a deployment reads the hours before it too.
    ValueError (or pyarrow's ArrowException) if it is neither."""
    table = pq.read_table(pa.BufferReader(data))
    if table.schema.equals(RAW_SPEC_SCHEMA, check_metadata=False):
        return table
    if not table.schema.equals(RAW_SCHEMA, check_metadata=False):
        raise ValueError(f"not a raw event archive file: schema is "
                         f"{table.schema.to_string(show_schema_metadata=False)!r}")
    times = table.column("timestamp").cast(pa.int64()).to_pylist()
    raws = [orjson.dumps({"user_id": user_id, "event_type": event_type, "timestamp": event_ms, "value": value})
            for user_id, event_type, event_ms, value in zip(
                table.column("user_id").to_pylist(), table.column("event_type").to_pylist(), times,
                table.column("value").to_pylist(), strict=True)]
    return table_of(RAW_SPEC_SCHEMA, [table.column("partition").combine_chunks(),
                                      table.column("offset").combine_chunks(), times, raws])


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
