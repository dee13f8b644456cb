"""Row shapes of the sinks and their serializations (formats only: no destinations).

* ``WindowRow``: one closed window of one event type.
* ``rows_to_parquet`` / ``parquet_to_rows``: the lake's aggregated files (AGGREGATE_SCHEMA).
* ``events_to_parquet`` (``event_columns_to_parquet``) / ``parquet_to_events``: the raw archive files
  (RAW_SCHEMA).
* ``row_to_json`` / ``row_from_json``: canonical compact JSON of one row (Redis index members).
* ``row_to_hash`` / ``row_from_hash``: the Redis hash of one closed window.
* ``row_to_api``: one row in the web API's answers.
* ``RollupRow`` and ``rollups_to_parquet`` / ``parquet_to_rollups``: the batch layer's hourly
  and daily rollups (ROLLUP_SCHEMA).
* ``rollup_to_api``: one rollup row in the web API's answers (GET /v1/rollups/...).
* ``Manifest`` and ``manifest_to_json`` / ``manifest_from_json``: what the batch layer read
  for one period, stored beside its output; ``RestateManifest`` likewise for the restatement of
  the windows starting in one hour.
* ``BatchRun`` / ``batch_run_to_hash`` and ``BatchStatus`` / ``batch_status_from_hash``: the batch
  job's status hash in Redis (what each run adds to it, and what the workers' /metrics read back).

This module is the one home of a closed window's encodings, and of the batch layer's.

Parquet output is deterministic: rows are sorted, and pyarrow writes no wall-clock
metadata (only ``created_by`` with its own version and the ``ARROW:schema`` blob), so the
same rows give the same bytes with the same pyarrow version. The writer options are
pinned explicitly so that a change of pyarrow defaults does not change the files silently.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from events import Event, EventColumns, iso_utc

__all__ = [
    "AGGREGATE_SCHEMA",
    "BATCH_COUNTERS",
    "AGGREGATE_SCHEMA_V1",
    "JSON_CONTENT_TYPE",
    "MANIFEST_FORMAT",
    "PARQUET_CONTENT_TYPE",
    "RAW_SCHEMA",
    "ROLLUP_SCHEMA",
    "BatchRun",
    "BatchStatus",
    "Manifest",
    "RestateManifest",
    "RollupRow",
    "WindowRow",
    "batch_run_to_hash",
    "batch_status_from_hash",
    "event_columns_to_parquet",
    "events_to_parquet",
    "manifest_from_json",
    "manifest_to_json",
    "parquet_to_rollups",
    "read_raw_table",
    "restate_manifest_from_json",
    "restate_manifest_to_json",
    "rollup_to_api",
    "rollups_to_parquet",
    "parquet_to_events",
    "parquet_to_rows",
    "row_from_hash",
    "row_from_json",
    "row_to_api",
    "row_to_hash",
    "row_to_json",
    "rows_to_parquet",
]

PARQUET_CONTENT_TYPE: Final = "application/vnd.apache.parquet"
JSON_CONTENT_TYPE: Final = "application/json"

_TIMESTAMP_MS_UTC: Final = pa.timestamp("ms", tz="UTC")

AGGREGATE_SCHEMA: Final = pa.schema([
    ("window_start", _TIMESTAMP_MS_UTC),
    ("window_end", _TIMESTAMP_MS_UTC),
    ("window", pa.string()),
    ("event_type", pa.string()),
    ("count", pa.int64()),
    ("sum", pa.float64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
    ("mean", pa.float64()),
    ("revision", pa.int64()),
    ("late_count", pa.int64()),
])
# The closed windows' files before the batch layer's restatement (no revision, no late_count):
# still read, as revision 0 with no late events.
AGGREGATE_SCHEMA_V1: Final = pa.schema([field for field in AGGREGATE_SCHEMA if field.name not in
                                        ("revision", "late_count")])

RAW_SCHEMA: Final = pa.schema([
    ("partition", pa.int32()),
    ("offset", pa.int64()),
    ("user_id", pa.string()),
    ("event_type", pa.string()),
    ("timestamp", _TIMESTAMP_MS_UTC),
    ("value", pa.float64()),
])

# One row per (period, event_type); `period` is "hourly" or "daily" (its dataset's name).
ROLLUP_SCHEMA: Final = pa.schema([
    ("period_start", _TIMESTAMP_MS_UTC),
    ("period_end", _TIMESTAMP_MS_UTC),
    ("period", pa.string()),
    ("event_type", pa.string()),
    ("count", pa.int64()),
    ("sum", pa.float64()),
    ("min", pa.float64()),
    ("max", pa.float64()),
    ("mean", pa.float64()),
    ("distinct_users", pa.int64()),
    ("p50", pa.float64()),
    ("p95", pa.float64()),
    ("p99", pa.float64()),
])

_JSON_OPTIONS: Final = orjson.OPT_SORT_KEYS


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


def _write_parquet(table: pa.Table, sorting_columns: Sequence[pq.SortingColumn]) -> bytes:
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


def _read_parquet(data: bytes, schema: pa.Schema, what: str) -> pa.Table:
    table = pq.read_table(pa.BufferReader(data))
    if not table.schema.equals(schema, check_metadata=False):
        raise ValueError(f"not a {what} file: schema is {table.schema.to_string(show_schema_metadata=False)!r}")
    return table


def rows_to_parquet(rows: Sequence[WindowRow]) -> bytes:
    """A Parquet file of AGGREGATE_SCHEMA, rows sorted by (window_start, event_type)."""
    ordered = sorted(rows, key=_sort_key)
    table = pa.Table.from_arrays(
        [
            pa.array([r.window_start_ms for r in ordered], type=_TIMESTAMP_MS_UTC),
            pa.array([r.window_end_ms for r in ordered], type=_TIMESTAMP_MS_UTC),
            pa.array([r.window for r in ordered], type=pa.string()),
            pa.array([r.event_type for r in ordered], type=pa.string()),
            pa.array([r.count for r in ordered], type=pa.int64()),
            pa.array([float(r.sum) for r in ordered], type=pa.float64()),
            pa.array([float(r.min) for r in ordered], type=pa.float64()),
            pa.array([float(r.max) for r in ordered], type=pa.float64()),
            pa.array([r.mean for r in ordered], type=pa.float64()),
            pa.array([r.revision for r in ordered], type=pa.int64()),
            pa.array([r.late_count for r in ordered], type=pa.int64()),
        ],
        schema=AGGREGATE_SCHEMA,
    )
    return _write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(3)])


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
    table = pa.Table.from_arrays(
        [
            partitions,
            pa.array(offsets, type=pa.int64()),
            pa.array(user_ids, type=pa.string()),
            pa.array(event_types, type=pa.string()),
            pa.array(event_ms, type=_TIMESTAMP_MS_UTC),
            pa.array(values, type=pa.float64()),
        ],
        schema=RAW_SCHEMA,
    )
    return _write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(1)])


def read_raw_table(data: bytes) -> pa.Table:
    """A raw archive file as a table of RAW_SCHEMA; ValueError (or pyarrow's ArrowException) if it is
    not one."""
    return _read_parquet(data, RAW_SCHEMA, "raw event archive")


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


def _json_float(number: float) -> float | str:
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
            "sum": _json_float(float(row.sum)),
            "min": _json_float(float(row.min)),
            "max": _json_float(float(row.max)),
            "mean": _json_float(row.mean),
            "revision": row.revision,
            "late_count": row.late_count,
        },
        option=_JSON_OPTIONS,
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


# -- Redis hash and web API: the other encodings of a closed window -------------------------

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


# -- the batch layer: rollups and manifests -----------------------------------------------


class RollupRow(NamedTuple):
    """One (period, event_type) of the hourly or daily rollups. ``sum`` is compensated summation
    in the lake's order; percentiles are nearest-rank (batch/rollup.py)."""

    period: str
    period_start_ms: int
    period_end_ms: int
    event_type: str
    count: int
    sum: float
    min: float
    max: float
    distinct_users: int
    p50: float
    p95: float
    p99: float

    @property
    def mean(self) -> float:
        return self.sum / self.count


def rollups_to_parquet(rows: Sequence[RollupRow]) -> bytes:
    """A Parquet file of ROLLUP_SCHEMA, rows sorted by (period_start, event_type)."""
    ordered = sorted(rows, key=lambda r: (r.period_start_ms, r.event_type, r.period))
    table = pa.Table.from_arrays(
        [
            pa.array([r.period_start_ms for r in ordered], type=_TIMESTAMP_MS_UTC),
            pa.array([r.period_end_ms for r in ordered], type=_TIMESTAMP_MS_UTC),
            pa.array([r.period for r in ordered], type=pa.string()),
            pa.array([r.event_type for r in ordered], type=pa.string()),
            pa.array([r.count for r in ordered], type=pa.int64()),
            pa.array([float(r.sum) for r in ordered], type=pa.float64()),
            pa.array([float(r.min) for r in ordered], type=pa.float64()),
            pa.array([float(r.max) for r in ordered], type=pa.float64()),
            pa.array([r.mean for r in ordered], type=pa.float64()),
            pa.array([r.distinct_users for r in ordered], type=pa.int64()),
            pa.array([float(r.p50) for r in ordered], type=pa.float64()),
            pa.array([float(r.p95) for r in ordered], type=pa.float64()),
            pa.array([float(r.p99) for r in ordered], type=pa.float64()),
        ],
        schema=ROLLUP_SCHEMA,
    )
    return _write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(3)])


def parquet_to_rollups(data: bytes) -> list[RollupRow]:
    """Inverse of rollups_to_parquet (``mean`` is derived, so it is not read back)."""
    table = _read_parquet(data, ROLLUP_SCHEMA, "rollup")
    column = table.column
    return [
        RollupRow(*values)
        for values in zip(
            column("period").to_pylist(),
            column("period_start").cast(pa.int64()).to_pylist(),
            column("period_end").cast(pa.int64()).to_pylist(),
            *(column(name).to_pylist() for name in (
                "event_type", "count", "sum", "min", "max", "distinct_users", "p50", "p95", "p99")),
            strict=True,
        )
    ]


def rollup_to_api(row: RollupRow) -> dict[str, Any]:
    """A rollup row as the web API answers it: both time forms, the mean, and non-finite floats as
    their repr string (as in row_to_json: JSON has no inf)."""
    return {
        "period": row.period,
        "event_type": row.event_type,
        "period_start": iso_utc(row.period_start_ms),
        "period_end": iso_utc(row.period_end_ms),
        "period_start_ms": row.period_start_ms,
        "period_end_ms": row.period_end_ms,
        "count": row.count,
        "sum": _json_float(row.sum),
        "min": _json_float(row.min),
        "max": _json_float(row.max),
        "mean": _json_float(row.mean),
        "distinct_users": row.distinct_users,
        "p50": _json_float(row.p50),
        "p95": _json_float(row.p95),
        "p99": _json_float(row.p99),
    }


MANIFEST_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the batch layer read for one period, written after the period's output.

    inputs: every object listed in the period's raw folders, key -> ETag (skipped ones included,
      so that an unchanged listing is recognised whole);
    skipped: key -> why it was not counted (a foreign name, not a raw archive file, ...);
    output: the rollup object written, None when no event was counted.
    No wall-clock time: the same inputs give the same bytes.
    """

    period: str
    start_ms: int
    end_ms: int
    inputs: Mapping[str, str]
    skipped: Mapping[str, str]
    events: int
    rows: int
    output: str | None


def manifest_to_json(manifest: Manifest) -> bytes:
    return orjson.dumps({
        "format": MANIFEST_FORMAT,
        "period": manifest.period,
        "start_ms": manifest.start_ms,
        "end_ms": manifest.end_ms,
        "start": iso_utc(manifest.start_ms),
        "inputs": dict(manifest.inputs),
        "skipped": dict(manifest.skipped),
        "events": manifest.events,
        "rows": manifest.rows,
        "output": manifest.output,
    }, option=_JSON_OPTIONS | orjson.OPT_INDENT_2)


def manifest_from_json(data: bytes) -> Manifest:
    """Inverse of manifest_to_json; ValueError if it is not a manifest of this format."""
    try:
        obj = orjson.loads(data)
        if obj.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {obj.get('format')!r}")
        return Manifest(period=str(obj["period"]), start_ms=int(obj["start_ms"]), end_ms=int(obj["end_ms"]),
                        inputs={str(k): str(v) for k, v in obj["inputs"].items()},
                        skipped={str(k): str(v) for k, v in obj["skipped"].items()},
                        events=int(obj["events"]), rows=int(obj["rows"]),
                        output=None if obj["output"] is None else str(obj["output"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a batch manifest: {exc}") from None


@dataclass(frozen=True, slots=True)
class RestateManifest:
    """What the batch layer read to restate the windows starting in one hour, written after their rows.

    end_ms: the end of the last of those windows (raw files of every hour up to it were read);
    windows: the window specs restated, as name:size_ms:step_ms;
    inputs, skipped, events: as in Manifest, over all those hours;
    restated: rows rewritten by the run that wrote the manifest (0 when nothing differed).
    """

    start_ms: int
    end_ms: int
    windows: Sequence[str]
    inputs: Mapping[str, str]
    skipped: Mapping[str, str]
    events: int
    restated: int


def restate_manifest_to_json(manifest: RestateManifest) -> bytes:
    return orjson.dumps({
        "format": MANIFEST_FORMAT,
        "period": "restated",
        "start_ms": manifest.start_ms,
        "end_ms": manifest.end_ms,
        "start": iso_utc(manifest.start_ms),
        "windows": list(manifest.windows),
        "inputs": dict(manifest.inputs),
        "skipped": dict(manifest.skipped),
        "events": manifest.events,
        "restated": manifest.restated,
    }, option=_JSON_OPTIONS | orjson.OPT_INDENT_2)


def restate_manifest_from_json(data: bytes) -> RestateManifest:
    """Inverse of restate_manifest_to_json; ValueError if it is not one of this format."""
    try:
        obj = orjson.loads(data)
        if obj.get("format") != MANIFEST_FORMAT or obj.get("period") != "restated":
            raise ValueError(f"not a restatement manifest of format {MANIFEST_FORMAT}")
        return RestateManifest(start_ms=int(obj["start_ms"]), end_ms=int(obj["end_ms"]),
                               windows=[str(w) for w in obj["windows"]],
                               inputs={str(k): str(v) for k, v in obj["inputs"].items()},
                               skipped={str(k): str(v) for k, v in obj["skipped"].items()},
                               events=int(obj["events"]), restated=int(obj["restated"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a restatement manifest: {exc}") from None


# -- the batch job's status in Redis (sinks/redis_store.py has its key) ---------------------

# Counted over every run since the hash was created; each run adds its own figures (HINCRBY).
BATCH_COUNTERS: Final = ("runs", "runs_failed", "periods_computed", "windows_restated", "rows_restated",
                         "objects_written", "objects_skipped")
_BATCH_TIMES: Final = ("last_success_ms", "last_failure_ms", "duration_ms", "last_sealed_hour_ms")


@dataclass(frozen=True, slots=True)
class BatchRun:
    """What one run of `faust -A app batch` adds to the status hash.

    finished_at_ms: wall time at the run's end; duration_ms: its wall duration (a successful run's
    becomes the hash's ``duration_ms``); last_sealed_hour_ms: the start of the newest hour the run
    found sealed (None when it could not establish the bound: the hash keeps the previous one).
    The counts are the run's RunReport figures (0 for a failed run, whose report is lost)."""

    finished_at_ms: int
    duration_ms: int
    ok: bool
    last_sealed_hour_ms: int | None
    periods_computed: int = 0
    windows_restated: int = 0
    rows_restated: int = 0
    objects_written: int = 0
    objects_skipped: int = 0


def batch_run_to_hash(run: BatchRun) -> tuple[dict[str, str], dict[str, int]]:
    """(fields to set, counters to increment by) for one run."""
    fields = {"last_success_ms" if run.ok else "last_failure_ms": str(int(run.finished_at_ms))}
    if run.ok:
        fields["duration_ms"] = str(int(run.duration_ms))
    if run.last_sealed_hour_ms is not None:
        fields["last_sealed_hour_ms"] = str(int(run.last_sealed_hour_ms))
    counters = {"runs": 1 if run.ok else 0, "runs_failed": 0 if run.ok else 1,
                "periods_computed": run.periods_computed, "windows_restated": run.windows_restated,
                "rows_restated": run.rows_restated, "objects_written": run.objects_written,
                "objects_skipped": run.objects_skipped}
    return fields, counters


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """The status hash as read back: None for a time no run has set yet; counters by BATCH_COUNTERS name."""

    last_success_ms: int | None
    last_failure_ms: int | None
    duration_ms: int | None
    last_sealed_hour_ms: int | None
    counters: Mapping[str, int]


def batch_status_from_hash(fields: Mapping[bytes, bytes]) -> BatchStatus | None:
    """Inverse of what batch_run_to_hash writes (summed over runs); None for an empty hash. Unknown
    fields are ignored and malformed ones raise ValueError."""
    if not fields:
        return None
    text = {name.decode("utf-8"): value.decode("utf-8") for name, value in fields.items()}
    times = {name: int(text[name]) if name in text else None for name in _BATCH_TIMES}
    return BatchStatus(**times, counters={name: int(text.get(name, "0")) for name in BATCH_COUNTERS})
