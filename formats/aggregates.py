"""A spec's closed windows (AGGREGATE_FORMAT 1): one row per (aggregation, window, window start, key),
with the key's parts and each measure's count, sum, min, max and mean.

* Parquet, one object per (aggregation, window, start, stage-2 partition) named by formats/lake.py:
  ``window_start``, ``window_end`` (timestamp[ms, tz=UTC]), ``window`` (string), one typed column per key
  part (string, int64 or bool, named by its field path's column), per measure ``<column>_count``
  (int64), ``_sum``, ``_min``, ``_max``, ``_mean`` (float64, null when no event of the window had the
  measure), ``revision``, ``late_count`` (int64). Rows sorted by window start, then key.
* JSON (the Redis index members, the web API): the same fields, measures as
  ``{"<column>": {"count", "sum", "min", "max", "mean"}}`` (null when the measure had no value), the
  key as ``{"<column>": part}``, non-finite floats as their repr string.
* the Redis hash of one window (formats/redis.py names it): the JSON's fields, each a string (ints as
  str(int), floats as repr(float), booleans "true"/"false"; "" for a null key part and for the
  statistics of a measure no event of the window had).

The row's layout comes from its aggregation (``AggregateLayout``): the caller builds it from the spec
(aggregations/spec.py), which this module does not import.

The speed layer exports a closed window instance as ``AggregateColumns`` (its rows as columns): the
Parquet file, the JSON members and the hashes are encoded from those columns without an object per
row, and are byte for byte the encodings of its rows (tests/unit/test_aggregate_columns.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from formats.events import iso_utc
from formats.parquet import TIMESTAMP_MS_UTC, read_parquet, table_of, write_parquet

__all__ = ["AGGREGATE_FORMAT", "STATISTICS", "AggregateColumns", "AggregateLayout", "AggregateRow", "MeasureStats",
           "aggregate_columns_to_hashes", "aggregate_columns_to_json", "aggregate_columns_to_parquet",
           "aggregate_row_from_json", "aggregate_row_to_api", "aggregate_row_to_hash", "aggregate_row_to_json",
           "aggregate_rows_to_parquet", "layout_fields", "parquet_to_aggregate_rows", "parquet_to_aggregate_table",
           "table_to_aggregate_rows"]

AGGREGATE_FORMAT: Final = 1
_ARROW_TYPES: Final = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_()}
STATISTICS: Final = ("count", "sum", "min", "max", "mean")  # per measure, in column order

KeyPart = str | int | bool | None


class MeasureStats(NamedTuple):
    """A measure's statistics over one window's events that had it (count > 0)."""

    count: int
    sum: float
    min: float
    max: float

    @property
    def mean(self) -> float:
        return self.sum / self.count


class AggregateRow(NamedTuple):
    aggregation: str
    window: str
    window_start_ms: int
    window_end_ms: int
    key: tuple[KeyPart, ...]
    measures: tuple[MeasureStats | None, ...]  # None: no event of the window had the measure
    revision: int = 0
    late_count: int = 0


@dataclass(frozen=True, slots=True)
class AggregateLayout:
    """The columns of one aggregation's rows: its key parts (column, type: string, int or bool) and its
    measures (column)."""

    key: tuple[tuple[str, str], ...]
    measures: tuple[str, ...]

    def schema(self) -> pa.Schema:
        fields = [("window_start", TIMESTAMP_MS_UTC), ("window_end", TIMESTAMP_MS_UTC), ("window", pa.string())]
        fields += [(column, _ARROW_TYPES[key_type]) for column, key_type in self.key]
        fields += [(f"{m}_{statistic}", pa.int64() if statistic == "count" else pa.float64())
                   for m in self.measures for statistic in STATISTICS]
        fields += [("revision", pa.int64()), ("late_count", pa.int64())]
        return pa.schema(fields)


def _order(row: AggregateRow) -> tuple[Any, ...]:
    # Parts of one column have one type, but may be null: nulls first.
    return (row.window_start_ms, tuple((part is not None, part) for part in row.key), row.window)


def aggregate_rows_to_parquet(rows: Sequence[AggregateRow], layout: AggregateLayout) -> bytes:
    """A Parquet file of the layout's schema, rows sorted by (window_start, key)."""
    ordered = sorted(rows, key=_order)
    columns: list[list[Any]] = [[r.window_start_ms for r in ordered], [r.window_end_ms for r in ordered],
                                [r.window for r in ordered]]
    columns += [[r.key[i] for r in ordered] for i in range(len(layout.key))]
    for m in range(len(layout.measures)):
        stats = [r.measures[m] for r in ordered]
        columns += [[None if s is None else s.count for s in stats],
                    [None if s is None else float(s.sum) for s in stats],
                    [None if s is None else float(s.min) for s in stats],
                    [None if s is None else float(s.max) for s in stats],
                    [None if s is None else s.mean for s in stats]]
    columns += [[r.revision for r in ordered], [r.late_count for r in ordered]]
    return write_parquet(table_of(layout.schema(), columns), [pq.SortingColumn(0)])


def parquet_to_aggregate_rows(data: bytes, aggregation: str, layout: AggregateLayout) -> list[AggregateRow]:
    """Inverse of aggregate_rows_to_parquet (the means are derived, so they are not read back)."""
    return table_to_aggregate_rows(parquet_to_aggregate_table(data, aggregation, layout), aggregation, layout)


def parquet_to_aggregate_table(data: bytes, aggregation: str, layout: AggregateLayout) -> pa.Table:
    """An aggregate file's table, checked against the layout's schema (ValueError if it is not one)."""
    return read_parquet(data, layout.schema(), f"aggregate file of {aggregation}")


def table_to_aggregate_rows(table: pa.Table, aggregation: str, layout: AggregateLayout) -> list[AggregateRow]:
    """The rows of a table of the layout's schema, in the table's order."""
    column = table.column
    starts = column("window_start").cast(pa.int64()).to_pylist()
    ends = column("window_end").cast(pa.int64()).to_pylist()
    keys = list(zip(*(column(name).to_pylist() for name, _ in layout.key), strict=True))
    measures: list[list[MeasureStats | None]] = [[] for _ in starts]
    for m in layout.measures:
        for row, values in zip(measures, zip(*(column(f"{m}_{s}").to_pylist() for s in STATISTICS[:4]),
                                             strict=True), strict=True):
            row.append(None if values[0] is None else MeasureStats(*values))
    return [AggregateRow(aggregation, window, start, end, key, tuple(stats), revision, late)
            for window, start, end, key, stats, revision, late in zip(
                column("window").to_pylist(), starts, ends, keys, measures, column("revision").to_pylist(),
                column("late_count").to_pylist(), strict=True)]


def _json_float(number: float) -> float | str:
    return number if math.isfinite(number) else repr(number)


def _stats_json(stats: MeasureStats | None) -> dict[str, Any] | None:
    if stats is None:
        return None
    return {"count": stats.count, "sum": _json_float(float(stats.sum)), "min": _json_float(float(stats.min)),
            "max": _json_float(float(stats.max)), "mean": _json_float(stats.mean)}


def aggregate_row_to_api(row: AggregateRow, layout: AggregateLayout) -> dict[str, Any]:
    """A row as the web API answers it, and as the Redis index holds it (aggregate_row_to_json)."""
    return {"aggregation": row.aggregation, "window": row.window, "window_start_ms": row.window_start_ms,
            "window_end_ms": row.window_end_ms, "window_start": iso_utc(row.window_start_ms),
            "window_end": iso_utc(row.window_end_ms),
            "key": {column: part for (column, _), part in zip(layout.key, row.key, strict=True)},
            "measures": {column: _stats_json(stats) for column, stats in zip(layout.measures, row.measures,
                                                                               strict=True)},
            "revision": row.revision, "late_count": row.late_count}


def aggregate_row_to_json(row: AggregateRow, layout: AggregateLayout) -> bytes:
    """Canonical compact JSON (sorted keys): equal rows give equal bytes."""
    return orjson.dumps(aggregate_row_to_api(row, layout), option=orjson.OPT_SORT_KEYS)


def aggregate_row_from_json(data: bytes | str, layout: AggregateLayout) -> AggregateRow:
    """Inverse of aggregate_row_to_json."""
    body = orjson.loads(data)
    measures = tuple(None if (s := body["measures"][m]) is None else
                     MeasureStats(int(s["count"]), float(s["sum"]), float(s["min"]), float(s["max"]))
                     for m in layout.measures)
    return AggregateRow(str(body["aggregation"]), str(body["window"]), int(body["window_start_ms"]),
                        int(body["window_end_ms"]), tuple(body["key"][column] for column, _ in layout.key), measures,
                        int(body["revision"]), int(body["late_count"]))


def _text(part: KeyPart) -> str:
    if part is None:
        return ""
    if isinstance(part, bool):
        return "true" if part else "false"
    return str(part)


def aggregate_row_to_hash(row: AggregateRow, layout: AggregateLayout) -> dict[str, str]:
    """The Redis hash of a row (see the module doc)."""
    fields = {"aggregation": row.aggregation, "window": row.window, "window_start_ms": str(int(row.window_start_ms)),
              "window_end_ms": str(int(row.window_end_ms)), "revision": str(int(row.revision)),
              "late_count": str(int(row.late_count))}
    fields.update({f"key.{column}": _text(part) for (column, _), part in zip(layout.key, row.key, strict=True)})
    for column, stats in zip(layout.measures, row.measures, strict=True):
        if stats is None:
            fields.update({f"{column}.{statistic}": "" for statistic in STATISTICS})
        else:
            fields.update({f"{column}.count": str(int(stats.count)), f"{column}.sum": repr(float(stats.sum)),
                           f"{column}.min": repr(float(stats.min)), f"{column}.max": repr(float(stats.max)),
                           f"{column}.mean": repr(stats.mean)})
    return fields


def layout_fields(layout: AggregateLayout) -> Mapping[str, str]:
    """Every field of an aggregate hash of the layout, in aggregate_row_to_hash's order, with its kind."""
    found = {"aggregation": "string", "window": "string", "window_start_ms": "int", "window_end_ms": "int",
             "revision": "int", "late_count": "int"}  # the same order as aggregate_row_to_hash's
    found.update({f"key.{column}": key_type for column, key_type in layout.key})
    found.update({f"{column}.{statistic}": "int" if statistic == "count" else "float"
                  for column in layout.measures for statistic in STATISTICS})
    return found


@dataclass(frozen=True, slots=True, eq=False)
class AggregateColumns:
    """The rows of one closed window instance of an aggregation, as columns in key order (nulls first, as
    aggregate_rows_to_parquet orders rows): what the speed layer exports. ``counts`` (int64), ``sums``,
    ``mins`` and ``maxs`` (float64) have one row per key and one column per measure; a count of 0 is a
    measure no event of the window had (its other statistics are then meaningless)."""

    aggregation: str
    window: str
    window_start_ms: int
    window_end_ms: int
    parts: tuple[list[KeyPart], ...]  # one column per key part of the layout
    counts: np.ndarray
    sums: np.ndarray
    mins: np.ndarray
    maxs: np.ndarray
    revision: int = 0
    late_count: int = 0

    @classmethod
    def in_key_order(cls, aggregation: str, window: str, window_start_ms: int, window_end_ms: int,
                     parts: Sequence[list[KeyPart]], counts: np.ndarray, sums: np.ndarray, mins: np.ndarray,
                     maxs: np.ndarray, layout: AggregateLayout) -> AggregateColumns:
        """The columns of rows given in any order, sorted by key (each key once)."""
        n = len(counts)
        if n > 1 and parts:
            table = pa.Table.from_arrays([pa.array(column, type=_ARROW_TYPES[key_type])
                                          for column, (_, key_type) in zip(parts, layout.key, strict=True)],
                                         names=[str(i) for i in range(len(parts))])
            # Arrow orders strings by their UTF-8 bytes, which is Python's order of code points.
            order = pc.sort_indices(table, sort_keys=[(str(i), "ascending", "at_start")
                                                      for i in range(len(parts))]).to_numpy()
            chosen = order.tolist()
            parts = [[column[i] for i in chosen] for column in parts]
            counts, sums, mins, maxs = counts[order], sums[order], mins[order], maxs[order]
        return cls(aggregation, window, window_start_ms, window_end_ms, tuple(parts), counts, sums, mins, maxs)

    @classmethod
    def of_rows(cls, rows: Sequence[AggregateRow], layout: AggregateLayout) -> AggregateColumns:
        """The columns of some rows of one window instance of the speed layer (revision 0, no late events)."""
        if not rows:
            raise ValueError("no rows: the columns of a window instance name it")
        first = rows[0]
        if any(row[:4] != first[:4] or row.revision or row.late_count for row in rows):
            raise ValueError("rows of more than one window instance, or restated rows")
        shape = (len(rows), len(layout.measures))
        counts = np.zeros(shape, dtype=np.int64)
        sums, mins, maxs = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for i, row in enumerate(rows):
            for m, stats in enumerate(row.measures):
                if stats is not None:
                    counts[i, m], sums[i, m], mins[i, m], maxs[i, m] = stats
        parts = [[row.key[i] for row in rows] for i in range(len(layout.key))]
        return cls.in_key_order(first.aggregation, first.window, first.window_start_ms, first.window_end_ms, parts,
                                counts, sums, mins, maxs, layout)

    def __len__(self) -> int:
        return len(self.counts)

    def part(self, start: int, stop: int) -> AggregateColumns:
        """Rows start to stop (the arrays are views)."""
        return AggregateColumns(self.aggregation, self.window, self.window_start_ms, self.window_end_ms,
                                tuple(values[start:stop] for values in self.parts), self.counts[start:stop],
                                self.sums[start:stop], self.mins[start:stop], self.maxs[start:stop], self.revision,
                                self.late_count)

    def keys(self) -> list[tuple[KeyPart, ...]]:
        return list(zip(*self.parts, strict=True)) if self.parts else [()] * len(self)

    def rows(self) -> list[AggregateRow]:
        """The rows themselves (for the alert rules and the web's open windows)."""
        head = (self.aggregation, self.window, self.window_start_ms, self.window_end_ms)
        return [AggregateRow(*head, key, tuple(None if c == 0 else MeasureStats(c, s, lo, hi)
                                               for c, s, lo, hi in zip(cs, ss, los, his, strict=True)),
                             self.revision, self.late_count)
                for key, cs, ss, los, his in zip(self.keys(), self.counts.tolist(), self.sums.tolist(),
                                                 self.mins.tolist(), self.maxs.tolist(), strict=True)]

    def _absent(self, m: int) -> np.ndarray:
        return self.counts[:, m] == 0

    def _means(self, m: int) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):  # a count of 0 is a null, never read
            return self.sums[:, m] / self.counts[:, m]


def aggregate_columns_to_parquet(columns: AggregateColumns, layout: AggregateLayout) -> bytes:
    """aggregate_rows_to_parquet(columns.rows(), layout), from the columns."""
    n = len(columns)
    arrays: list[Sequence[Any] | pa.Array] = [np.full(n, columns.window_start_ms, dtype=np.int64),
                                              np.full(n, columns.window_end_ms, dtype=np.int64),
                                              [columns.window] * n, *columns.parts]
    for m in range(len(layout.measures)):
        absent = columns._absent(m)
        arrays += [pa.array(values, mask=absent, type=pa.int64() if i == 0 else pa.float64())
                   for i, values in enumerate((columns.counts[:, m], columns.sums[:, m], columns.mins[:, m],
                                               columns.maxs[:, m], columns._means(m)))]
    arrays += [[columns.revision] * n, [columns.late_count] * n]
    schema = layout.schema()
    table = pa.Table.from_arrays([pa.array(array, type=field.type) if not isinstance(array, pa.Array) else array
                                  for array, field in zip(arrays, schema, strict=True)], schema=schema)
    return write_parquet(table, [pq.SortingColumn(0)])


def _number_texts(values: np.ndarray) -> list[bytes]:
    """Each number of a column as the JSON of aggregate_row_to_json writes it, from one orjson call for the
    column (orjson writes a numpy float64 as it writes a Python float); non-finite floats as their repr
    string (_json_float)."""
    if not len(values):
        return []
    texts = orjson.dumps(np.ascontiguousarray(values), option=orjson.OPT_SERIALIZE_NUMPY)[1:-1].split(b",")
    if values.dtype.kind == "f":
        for i in np.flatnonzero(~np.isfinite(values)).tolist():
            texts[i] = orjson.dumps(repr(float(values[i])))
    return texts


def _literal(text: bytes) -> bytes:
    return text.replace(b"%", b"%%")  # a constant part of a %-template


def aggregate_columns_to_json(columns: AggregateColumns, layout: AggregateLayout) -> list[bytes]:
    """aggregate_row_to_json of each row, in order, filled into one template per window instance (the keys
    in orjson's sorted order)."""
    n = len(columns)
    if not n:
        return []
    key_columns = sorted(zip((column for column, _ in layout.key), columns.parts, strict=True))
    key_template = b",".join(_literal(orjson.dumps(name)) + b":%b" for name, _ in key_columns)
    stats = b'{"count":%b,"max":%b,"mean":%b,"min":%b,"sum":%b}'
    measures = sorted(range(len(layout.measures)), key=layout.measures.__getitem__)
    measure_template = b",".join(_literal(orjson.dumps(layout.measures[m])) + b":%b" for m in measures)
    template = b"".join((
        b'{"aggregation":', _literal(orjson.dumps(columns.aggregation)), b',"key":{', key_template,
        b'},"late_count":', b"%d" % columns.late_count, b',"measures":{', measure_template,
        b'},"revision":', b"%d" % columns.revision, b',"window":', _literal(orjson.dumps(columns.window)),
        b',"window_end":', _literal(orjson.dumps(iso_utc(columns.window_end_ms))),
        b',"window_end_ms":', b"%d" % columns.window_end_ms,
        b',"window_start":', _literal(orjson.dumps(iso_utc(columns.window_start_ms))),
        b',"window_start_ms":', b"%d" % columns.window_start_ms, b"}"))
    slots: list[list[bytes]] = [[orjson.dumps(part) for part in values] for _, values in key_columns]
    for m in measures:
        texts = [stats % values for values in zip(
            _number_texts(columns.counts[:, m]), _number_texts(columns.maxs[:, m]),
            _number_texts(columns._means(m)), _number_texts(columns.mins[:, m]), _number_texts(columns.sums[:, m]),
            strict=True)]
        for i in np.flatnonzero(columns._absent(m)).tolist():
            texts[i] = b"null"
        slots.append(texts)
    return [template % values for values in zip(*slots, strict=True)]


def aggregate_columns_to_hashes(columns: AggregateColumns, layout: AggregateLayout) -> list[list[str]]:
    """The values of aggregate_row_to_hash of each row, in order (its fields are layout_fields')."""
    n = len(columns)
    fields: list[Sequence[str]] = [
        [columns.aggregation] * n, [columns.window] * n, [str(columns.window_start_ms)] * n,
        [str(columns.window_end_ms)] * n, [str(columns.revision)] * n, [str(columns.late_count)] * n]
    fields += [[_text(part) for part in values] for values in columns.parts]
    for m in range(len(layout.measures)):
        absent = columns._absent(m).tolist()
        for values, form in ((columns.counts[:, m], str), (columns.sums[:, m], repr), (columns.mins[:, m], repr),
                             (columns.maxs[:, m], repr), (columns._means(m), repr)):
            fields.append(["" if gone else text for gone, text in zip(absent, map(form, values.tolist()),
                                                                        strict=True)])
    return [list(values) for values in zip(*fields, strict=True)]
