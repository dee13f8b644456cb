"""The batch layer's files and status: hourly and daily rollups (Parquet of ROLLUP_SCHEMA, ROLLUP_FORMAT 1; a
spec's aggregation's of AggregateRollupLayout.schema(), AGGREGATE_ROLLUP_FORMAT 1), the manifests of what each
period and each restated hour read (JSON, MANIFEST_FORMAT 1, in their ``format`` field), and the batch job's
status hash in Redis (STATUS_FORMAT 1; formats/redis.py names its key).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from formats.events import iso_utc
from formats.parquet import MEASURE_FIELDS, TIMESTAMP_MS_UTC, read_parquet, table_of, write_parquet
from formats.rows import JSON_OPTIONS, json_float

__all__ = [
    "AGGREGATE_ROLLUP_FORMAT",
    "BATCH_COUNTERS",
    "JSON_CONTENT_TYPE",
    "MANIFEST_FORMAT",
    "ROLLUP_FORMAT",
    "ROLLUP_SCHEMA",
    "STATUS_FORMAT",
    "AggregateRollupLayout",
    "BatchRun",
    "BatchStatus",
    "Manifest",
    "RestateManifest",
    "RollupRow",
    "aggregate_rollup_to_api",
    "aggregate_rollup_to_parquet",
    "batch_run_to_hash",
    "batch_status_from_hash",
    "manifest_from_json",
    "manifest_to_json",
    "parquet_to_aggregate_rollup",
    "parquet_to_rollups",
    "restate_manifest_from_json",
    "restate_manifest_to_json",
    "rollup_to_api",
    "rollups_to_parquet",
]

ROLLUP_FORMAT: Final = 1
JSON_CONTENT_TYPE: Final = "application/json"

# One row per (period, event_type); `period` is "hourly" or "daily" (its dataset's name).
ROLLUP_SCHEMA: Final = pa.schema([
    ("period_start", TIMESTAMP_MS_UTC),
    ("period_end", TIMESTAMP_MS_UTC),
    ("period", pa.string()),
    ("event_type", pa.string()),
    *MEASURE_FIELDS,
    ("distinct_users", pa.int64()),
    ("p50", pa.float64()),
    ("p95", pa.float64()),
    ("p99", pa.float64()),
])


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
    table = table_of(ROLLUP_SCHEMA, [
        [r.period_start_ms for r in ordered], [r.period_end_ms for r in ordered], [r.period for r in ordered],
        [r.event_type for r in ordered], [r.count for r in ordered], [float(r.sum) for r in ordered],
        [float(r.min) for r in ordered], [float(r.max) for r in ordered], [r.mean for r in ordered],
        [r.distinct_users for r in ordered], [float(r.p50) for r in ordered], [float(r.p95) for r in ordered],
        [float(r.p99) for r in ordered]])
    return write_parquet(table, [pq.SortingColumn(0), pq.SortingColumn(3)])


def parquet_to_rollups(data: bytes) -> list[RollupRow]:
    """Inverse of rollups_to_parquet (``mean`` is derived, so it is not read back)."""
    table = read_parquet(data, ROLLUP_SCHEMA, "rollup")
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
        "sum": json_float(row.sum),
        "min": json_float(row.min),
        "max": json_float(row.max),
        "mean": json_float(row.mean),
        "distinct_users": row.distinct_users,
        "p50": json_float(row.p50),
        "p95": json_float(row.p95),
        "p99": json_float(row.p99),
    }


AGGREGATE_ROLLUP_FORMAT: Final = 1
ROLLUP_STATISTICS: Final = ("count", "sum", "min", "max", "mean", "p50", "p95", "p99")
_KEY_TYPES: Final = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_()}


@dataclass(frozen=True, slots=True)
class AggregateRollupLayout:
    """The columns of a spec's aggregation's rollups: one row per (period, key) with ``period_start``,
    ``period_end`` (timestamp[ms, tz=UTC]), ``period`` ("hourly" or "daily"), one typed column per key
    part (string, int64 or bool), ``events`` (the events counted), per measure ``<column>_count`` (int64),
    ``_sum``, ``_min``, ``_max``, ``_mean``, ``_p50``, ``_p95``, ``_p99`` (float64; null when no event of
    the key had the measure), and per distinct field ``<column>_distinct`` (int64: its distinct values,
    a null not counted). Rows sorted by key, nulls first. Definitions as the article's rollups'
    (batch/rollup.py): compensated sums in the lake's order, nearest-rank percentiles."""

    key: tuple[tuple[str, str], ...]  # (column, type: string, int or bool)
    measures: tuple[str, ...]
    distinct: tuple[str, ...]

    def schema(self) -> pa.Schema:
        fields = [("period_start", TIMESTAMP_MS_UTC), ("period_end", TIMESTAMP_MS_UTC), ("period", pa.string())]
        fields += [(column, _KEY_TYPES[key_type]) for column, key_type in self.key]
        fields.append(("events", pa.int64()))
        fields += [(f"{m}_{statistic}", pa.int64() if statistic == "count" else pa.float64())
                   for m in self.measures for statistic in ROLLUP_STATISTICS]
        fields += [(f"{d}_distinct", pa.int64()) for d in self.distinct]
        return pa.schema(fields)


def aggregate_rollup_to_parquet(table: pa.Table, layout: AggregateRollupLayout) -> bytes:
    """A Parquet file of the layout's schema from a table with its columns (in any order), rows in the
    table's order (the engine's: by key)."""
    schema = layout.schema()
    return write_parquet(table.select(schema.names).cast(schema), [pq.SortingColumn(0)])


def aggregate_rollup_to_api(row: Mapping[str, Any], layout: AggregateRollupLayout) -> dict[str, Any]:
    """A row of a spec's rollups (its columns, times in epoch ms) as the web API answers it: the key as
    ``{"<column>": part}``, each measure's statistics as ``{"<column>": {"count", ...}}`` (null when no
    event had the measure), each distinct field's count as ``{"<column>": n}``."""
    start, end = int(row["period_start"]), int(row["period_end"])
    measures: dict[str, Any] = {}
    for m in layout.measures:
        measures[m] = None if not row[f"{m}_count"] else {
            statistic: row[f"{m}_{statistic}"] if statistic == "count" else json_float(row[f"{m}_{statistic}"])
            for statistic in ROLLUP_STATISTICS}
    return {"period": row["period"], "period_start": iso_utc(start), "period_end": iso_utc(end),
            "period_start_ms": start, "period_end_ms": end,
            "key": {column: row[column] for column, _ in layout.key}, "events": row["events"],
            "measures": measures, "distinct": {d: row[f"{d}_distinct"] for d in layout.distinct}}


def parquet_to_aggregate_rollup(data: bytes, layout: AggregateRollupLayout) -> pa.Table:
    """A rollup file of the layout as a table; ValueError if it is not one."""
    return read_parquet(data, layout.schema(), "aggregation rollup")


MANIFEST_FORMAT: Final = 1


@dataclass(frozen=True, slots=True)
class Manifest:
    """What the batch layer read for one period, written after the period's output.

    inputs: every object listed in the period's raw folders, key -> ETag (skipped ones included,
      so that an unchanged listing is recognised whole);
    skipped: key -> why it was not counted (a foreign name, not a raw archive file, ...);
    output: the rollup object written, None when no event was counted;
    definition: for a spec's aggregation, the fingerprint of what it was computed by (the spec's time and
      the aggregation, batch/spec_job.py): a changed aggregation is computed again. None (and absent from
      the JSON) for the article's rollups.
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
    definition: str | None = None


def manifest_to_json(manifest: Manifest) -> bytes:
    return orjson.dumps({
        **({} if manifest.definition is None else {"definition": manifest.definition}),
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
    }, option=JSON_OPTIONS | orjson.OPT_INDENT_2)


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
                        output=None if obj["output"] is None else str(obj["output"]),
                        definition=None if obj.get("definition") is None else str(obj["definition"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a batch manifest: {exc}") from None


@dataclass(frozen=True, slots=True)
class RestateManifest:
    """What the batch layer read to restate the windows starting in one hour, written after their rows.

    end_ms: the end of the last of those windows (raw files of every hour up to it were read);
    windows: the window specs restated, as name:size_ms:step_ms;
    inputs, skipped, events: as in Manifest, over all those hours;
    restated: rows rewritten by the run that wrote the manifest (0 when nothing differed);
    definition: as in Manifest (None for the article's windows).
    """

    start_ms: int
    end_ms: int
    windows: Sequence[str]
    inputs: Mapping[str, str]
    skipped: Mapping[str, str]
    events: int
    restated: int
    definition: str | None = None


def restate_manifest_to_json(manifest: RestateManifest) -> bytes:
    return orjson.dumps({
        **({} if manifest.definition is None else {"definition": manifest.definition}),
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
    }, option=JSON_OPTIONS | orjson.OPT_INDENT_2)


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
                               events=int(obj["events"]), restated=int(obj["restated"]),
                               definition=None if obj.get("definition") is None else str(obj["definition"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"not a restatement manifest: {exc}") from None


# -- the batch job's status in Redis (formats/redis.py has its key) ---------------------------

STATUS_FORMAT: Final = 1  # the status hash: the fields below, since the first release
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
