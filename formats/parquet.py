"""The lake's Parquet files: the writer's options, pinned, and a reader that checks a file's schema.

Parquet output is deterministic: rows are sorted by their writers, and pyarrow writes no wall-clock
metadata (only ``created_by`` with its own version and the ``ARROW:schema`` blob), so the same rows
give the same bytes with the same pyarrow version. The writer options are pinned explicitly so that
a change of pyarrow defaults does not change the files silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq

__all__ = ["MEASURE_FIELDS", "PARQUET_CONTENT_TYPE", "TIMESTAMP_MS_UTC", "read_parquet", "table_of", "write_parquet"]

PARQUET_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
TIMESTAMP_MS_UTC: Final = pa.timestamp("ms", tz="UTC")
# The aggregates of a value, in the closed windows' files and in the rollups alike.
MEASURE_FIELDS: Final = [("count", pa.int64()), ("sum", pa.float64()), ("min", pa.float64()), ("max", pa.float64()),
                         ("mean", pa.float64())]


def write_parquet(table: pa.Table, sorting_columns: Sequence[pq.SortingColumn]) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        version="2.6",
        compression="snappy",
        use_dictionary=True,
        write_statistics=True,
        data_page_version="1.0",
        store_schema=True,
        sorting_columns=sorting_columns,
    )
    return sink.getvalue().to_pybytes()


def read_parquet(data: bytes, schema: pa.Schema, what: str) -> pa.Table:
    table = pq.read_table(pa.BufferReader(data))
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"not a {what} file: schema is {table.schema.to_string(show_schema_metadata=False)!r}")
    return table


def table_of(schema: pa.Schema, columns: Sequence[Sequence[object] | pa.Array]) -> pa.Table:
    """A table of `schema` from its columns, in the schema's order, each typed as the schema says."""
    return pa.Table.from_arrays([column if isinstance(column, pa.Array) else pa.array(column, type=field.type)
                                 for column, field in zip(columns, schema, strict=True)], schema=schema)
