"""A closed window's row (one window instance of one event type) and every encoding of it.

* Parquet, the lake's aggregated files (formats/lake.py names them): ROW_FORMAT 2, AGGREGATE_SCHEMA.
  Generation 1 (before the batch layer's restatement: no ``revision``, no ``late_count``,
  AGGREGATE_SCHEMA_V1) is still read, as revision 0 without late events.
* canonical compact JSON (``row_to_json``): the members of Redis' latest-windows index;
  a member of generation 1 reads as revision 0.
* the Redis hash of one closed window (``row_to_hash``); a hash of generation 1 reads as revision 0.
* the web API's answer (``row_to_api``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from formats.events import iso_utc
from formats.parquet import MEASURE_FIELDS, TIMESTAMP_MS_UTC, table_of, write_parquet

__all__ = [
    "AGGREGATE_SCHEMA",
    "AGGREGATE_SCHEMA_V1",
    "HASH_FIELDS",
    "ROW_FORMAT",
    "WindowRow",
    "json_float",
    "parquet_to_rows",
    "row_from_hash",
    "row_from_json",
    "row_to_api",
    "row_to_hash",
    "row_to_json",
    "rows_to_parquet",
]

ROW_FORMAT: Final = 2
JSON_OPTIONS: Final = orjson.OPT_SORT_KEYS

AGGREGATE_SCHEMA: Final = pa.schema([
    ("window_start", TIMESTAMP_MS_UTC),
    ("window_end", TIMESTAMP_MS_UTC),
    ("window", pa.string()),
    ("event_type", pa.string()),
    *MEASURE_FIELDS,
    ("revision", pa.int64()),
    ("late_count", pa.int64()),
])
# The closed windows' files before the batch layer's restatement (no revision, no late_count):
# still read, as revision 0 with no late events.
AGGREGATE_SCHEMA_V1: Final = pa.schema([field for field in AGGREGATE_SCHEMA if field.name not in
                                        ("revision", "late_count")])


class WindowRow(NamedTuple):
    """One closed window of one event type; ``window`` is the window spec's name.

    ``revision`` 0 is the speed layer's row (stage 2); 1 and up, a row the batch layer restated
    from the raw archive. ``late_count`` is how many of ``count``'s events the speed layer's row
    did not count (late events, or events before the window was configured)."""

    window: str
    window_start_ms: int
    window_end_ms: int
    event_type: str
    count: int
    sum: float
    min: float
    max: float
    revision: int = 0
    late_count: int = 0

    @property
    def mean(self) -> float:
        return self.sum / self.count


def _sort_key(row: WindowRow) -> tuple[int, str, str, int, int, float, float, float, int, int]:
    # (window_start, event_type) first, as promised to readers; the rest only makes the
    # order total, so even duplicate (start, type) pairs serialize deterministically.
    return (row.window_start_ms, row.event_type, row.window, row.window_end_ms, row.count, row.sum, row.min,
            row.max, row.revision, row.late_count)


def rows_to_parquet(rows: Sequence[WindowRow]) -> bytes:
    """A Parquet file of AGGREGATE_SCHEMA, rows sorted by (window_start, event_type)."""
    ordered = sorted(rows, key=_sort_key)
    table = table_of(AGGREGATE_SCHEMA, [
        [r.window_start_ms for r in ordered], [r.window_end_ms for r in ordered], [r.window for r in ordered],
        [r.event_type for r in ordered], [r.count for r in ordered], [float(r.sum) for r in ordered],
        [float(r.min) for r in ordered], [float(r.max) for r in ordered], [r.mean for r in ordered],
        [r.revision for r in ordered], [r.late_count for r in ordered]])
    return write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(3)])


def parquet_to_rows(data: bytes) -> list[WindowRow]:
    """Inverse of rows_to_parquet (``mean`` is derived, so it is not read back). Also reads the files
    of AGGREGATE_SCHEMA_V1, written before restatement, as revision 0 without late events."""
    table = pq.read_table(pa.BufferReader(data))
    if table.schema.equals(AGGREGATE_SCHEMA_V1, check_metadata=False):
        zeros = pa.array([0] * table.num_rows, type=pa.int64())
        table = table.append_column("revision", zeros).append_column("late_count", zeros)
    elif not table.schema.equals(AGGREGATE_SCHEMA, check_metadata=False):
        raise ValueError("not a window aggregate file: schema is "
                         f"{table.schema.to_string(show_schema_metadata=False)!r}")
    column = table.column
    return [
        WindowRow(*values)
        for values in zip(
            column("window").to_pylist(),
            column("window_start").cast(pa.int64()).to_pylist(),
            column("window_end").cast(pa.int64()).to_pylist(),
            column("event_type").to_pylist(),
            column("count").to_pylist(),
            column("sum").to_pylist(),
            column("min").to_pylist(),
            column("max").to_pylist(),
            column("revision").to_pylist(),
            column("late_count").to_pylist(),
            strict=True,
        )
    ]


def json_float(number: float) -> float | str:
    # JSON has no inf/nan and orjson would silently write null; an overflowed sum is a
    # real (if rare) value, so non-finite floats travel as their repr string instead.
    return number if math.isfinite(number) else repr(number)


def row_to_json(row: WindowRow) -> bytes:
    """Canonical compact JSON (sorted keys); equal rows give equal bytes."""
    return orjson.dumps(
        {
            "window": row.window,
            "window_start_ms": row.window_start_ms,
            "window_end_ms": row.window_end_ms,
            "event_type": row.event_type,
            "count": row.count,
            "sum": json_float(float(row.sum)),
            "min": json_float(float(row.min)),
            "max": json_float(float(row.max)),
            "mean": json_float(row.mean),
            "revision": row.revision,
            "late_count": row.late_count,
        },
        option=JSON_OPTIONS,
    )


def row_from_json(data: bytes | str) -> WindowRow:
    """Inverse of row_to_json; floats come back bit for bit (orjson writes shortest repr). A member
    written before restatement (no revision, no late_count) reads as revision 0."""
    obj = orjson.loads(data)
    return WindowRow(
        window=obj["window"],
        window_start_ms=int(obj["window_start_ms"]),
        window_end_ms=int(obj["window_end_ms"]),
        event_type=obj["event_type"],
        count=int(obj["count"]),
        sum=float(obj["sum"]),
        min=float(obj["min"]),
        max=float(obj["max"]),
        revision=int(obj.get("revision", 0)),
        late_count=int(obj.get("late_count", 0)),
    )


# Required in a hash; ``revision`` and ``late_count`` came later and default to 0 (speed layer).
HASH_FIELDS: Final = ("window", "event_type", "window_start_ms", "window_end_ms", "count", "sum", "min", "max", "mean")


def row_to_hash(row: WindowRow) -> dict[str, str]:
    """The Redis hash of a row: ints as str(int), floats as repr(float), so float(value) gives back the
    exact float (also -0.0 and inf)."""
    return {
        "window": row.window,
        "event_type": row.event_type,
        "window_start_ms": str(int(row.window_start_ms)),
        "window_end_ms": str(int(row.window_end_ms)),
        "count": str(int(row.count)),
        "sum": repr(float(row.sum)),
        "min": repr(float(row.min)),
        "max": repr(float(row.max)),
        "mean": repr(row.mean),
        "revision": str(int(row.revision)),
        "late_count": str(int(row.late_count)),
    }


def row_from_hash(fields: Mapping[bytes, bytes]) -> WindowRow:
    """Inverse of row_to_hash."""
    text = {name.decode("utf-8"): value.decode("utf-8") for name, value in fields.items()}
    missing = [name for name in HASH_FIELDS if name not in text]
    if missing:
        raise ValueError(f"window hash lacks fields {missing}")
    return WindowRow(
        window=text["window"],
        window_start_ms=int(text["window_start_ms"]),
        window_end_ms=int(text["window_end_ms"]),
        event_type=text["event_type"],
        count=int(text["count"]),
        sum=float(text["sum"]),
        min=float(text["min"]),
        max=float(text["max"]),
        revision=int(text.get("revision", "0")),
        late_count=int(text.get("late_count", "0")),
    )


def row_to_api(row: WindowRow) -> dict[str, Any]:
    """A row as the web API answers it: both time forms (epoch ms and ISO-8601) and the mean."""
    return {
        "window": row.window,
        "event_type": row.event_type,
        "window_start": iso_utc(row.window_start_ms),
        "window_end": iso_utc(row.window_end_ms),
        "window_start_ms": row.window_start_ms,
        "window_end_ms": row.window_end_ms,
        "count": row.count,
        "sum": row.sum,
        "min": row.min,
        "max": row.max,
        "mean": row.mean,
        "revision": row.revision,
        "late_count": row.late_count,
    }
