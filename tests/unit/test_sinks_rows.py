"""Parquet/JSON formats of the sinks and the lake's object names (pure, no I/O)."""

from __future__ import annotations

import io
import json
import random
from datetime import datetime, timedelta, timezone

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from formats.batch import (
    BATCH_COUNTERS,
    BatchRun,
    BatchStatus,
    RollupRow,
    batch_run_to_hash,
    batch_status_from_hash,
    rollup_to_api,
)
from formats.events import Event
from formats.lake import aggregate_key, archive_key
from formats.raw import RAW_SCHEMA, events_to_parquet, parquet_to_events
from formats.rows import (
    AGGREGATE_SCHEMA,
    AGGREGATE_SCHEMA_V1,
    WindowRow,
    parquet_to_rows,
    row_from_hash,
    row_from_json,
    row_to_api,
    row_to_hash,
    row_to_json,
    rows_to_parquet,
)
from testing.reference import exact

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
HOSTILE_TYPES = ["a:b", "*", "../..", "x/y=z", "line\nbreak", "\x00", "😀" * 200, "%2F", "_hidden", ".dot", "{tag}"]


def ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


START_MS = ms(datetime(2025, 11, 15, 23, 59, tzinfo=timezone.utc))


def row(event_type: str, start_ms: int = START_MS, count: int = 3, total: float = 4.5, low: float = -1.0,
        high: float = 3.0) -> WindowRow:
    return WindowRow("tumbling_1m", start_ms, start_ms + 60_000, event_type, count, total, low, high)


def test_aggregate_schema_is_exact() -> None:
    data = rows_to_parquet([row("click")])
    schema = pq.ParquetFile(io.BytesIO(data)).schema_arrow
    assert [(field.name, str(field.type)) for field in schema] == [
        ("window_start", "timestamp[ms, tz=UTC]"),
        ("window_end", "timestamp[ms, tz=UTC]"),
        ("window", "string"),
        ("event_type", "string"),
        ("count", "int64"),
        ("sum", "double"),
        ("min", "double"),
        ("max", "double"),
        ("mean", "double"),
        ("revision", "int64"),
        ("late_count", "int64"),
    ]
    assert schema.equals(AGGREGATE_SCHEMA, check_metadata=False)
    # What non-Arrow readers (Spark, Trino, DuckDB) see: INT64 milliseconds adjusted to UTC.
    for index in (0, 1):
        column = pq.ParquetFile(io.BytesIO(data)).schema.column(index)
        assert column.physical_type == "INT64"
        assert json.loads(column.logical_type.to_json())["isAdjustedToUTC"] is True
        assert json.loads(column.logical_type.to_json())["timeUnit"] == "milliseconds"


def test_raw_schema_is_exact() -> None:
    data = events_to_parquet([(2, 7, Event("u", "click", START_MS, 1.5))])
    schema = pq.ParquetFile(io.BytesIO(data)).schema_arrow
    assert [(field.name, str(field.type)) for field in schema] == [
        ("partition", "int32"),
        ("offset", "int64"),
        ("user_id", "string"),
        ("event_type", "string"),
        ("timestamp", "timestamp[ms, tz=UTC]"),
        ("value", "double"),
    ]
    assert schema.equals(RAW_SCHEMA, check_metadata=False)


def test_same_rows_give_identical_bytes_in_any_input_order() -> None:
    rows = [row(t, start_ms=START_MS + (i % 3) * 60_000, count=i + 1, total=i * 0.1) for i, t in
            enumerate(["view", "click", "buy", "zzz", "aaa", "mid"])]
    first = rows_to_parquet(rows)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    assert rows_to_parquet(shuffled) == first
    assert rows_to_parquet(tuple(rows)) == first
    metadata = pq.ParquetFile(io.BytesIO(first)).metadata
    # Nothing wall-clock dependent: only the writer's version and the Arrow schema.
    assert metadata.created_by == f"parquet-cpp-arrow version {pa.__version__}"
    assert list(metadata.metadata) == [b"ARROW:schema"]


def test_rows_are_sorted_by_window_start_then_event_type() -> None:
    later = START_MS + 60_000
    rows = [row("b", later), row("a", later), row("c"), row("a")]
    table = pq.read_table(io.BytesIO(rows_to_parquet(rows)))
    assert table.column("window_start").cast(pa.int64()).to_pylist() == [START_MS, START_MS, later, later]
    assert table.column("event_type").to_pylist() == ["a", "c", "a", "b"]
    sorting = pq.ParquetFile(io.BytesIO(rows_to_parquet(rows))).metadata.row_group(0).sorting_columns
    assert [(c.column_index, c.descending) for c in sorting] == [(0, False), (3, False)]


def test_round_trip_is_exact_for_edge_floats_and_hostile_types() -> None:
    rows = [
        row("neg-zero", total=-0.0, low=-0.0, high=0.0),
        row("huge", count=2, total=1.7976931348623157e308, low=-1.7976931348623157e308, high=1.7976931348623157e308),
        row("tiny", count=1, total=5e-324, low=5e-324, high=5e-324),
        row("inf", count=2, total=float("inf"), low=1.0, high=1.7976931348623157e308),
        row("third", count=3, total=0.1 + 0.2, low=0.1, high=0.2),
        *[row(t, count=i + 1, total=float(i)) for i, t in enumerate(HOSTILE_TYPES)],
    ]
    back = parquet_to_rows(rows_to_parquet(rows))
    assert exact(back) == exact(sorted(rows, key=lambda r: r.event_type))
    table = pq.read_table(io.BytesIO(rows_to_parquet(rows)))
    means = dict(zip(table.column("event_type").to_pylist(), table.column("mean").to_pylist(), strict=True))
    assert repr(means["neg-zero"]) == "-0.0"
    assert means["third"] == (0.1 + 0.2) / 3
    assert means["huge"] == 1.7976931348623157e308 / 2
    assert means["inf"] == float("inf")
    assert means["😀" * 200] == 6.0 / 7


def test_empty_rows_give_a_valid_empty_file() -> None:
    assert parquet_to_rows(rows_to_parquet([])) == []


def test_wrong_file_kind_is_rejected() -> None:
    raw = events_to_parquet([(0, 0, Event("u", "t", 0, 0.0))])
    with pytest.raises(ValueError, match="not a window aggregate file"):
        parquet_to_rows(raw)
    with pytest.raises(ValueError, match="not a raw event archive file"):
        parquet_to_events(rows_to_parquet([row("x")]))


def test_restated_rows_round_trip_and_files_of_the_first_format_read_as_revision_0() -> None:
    restated = row("click")._replace(revision=2, late_count=1)
    assert parquet_to_rows(rows_to_parquet([restated])) == [restated]
    assert row_from_json(row_to_json(restated)) == restated
    as_hash = row_to_hash(restated)
    assert (as_hash["revision"], as_hash["late_count"]) == ("2", "1")
    assert row_from_hash({k.encode(): v.encode() for k, v in as_hash.items()}) == restated
    assert (row_to_api(restated)["revision"], row_to_api(restated)["late_count"]) == (2, 1)
    # What stage 2 wrote before the format change: 9 columns, a hash and a JSON member without the two fields.
    table = pq.read_table(io.BytesIO(rows_to_parquet([row("click")]))).select(AGGREGATE_SCHEMA_V1.names)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    assert parquet_to_rows(sink.getvalue()) == [row("click")]
    old_hash = {k.encode(): v.encode() for k, v in row_to_hash(row("click")).items()
                if k not in ("revision", "late_count")}
    assert row_from_hash(old_hash) == row("click")
    old_json = orjson.loads(row_to_json(row("click")))
    del old_json["revision"], old_json["late_count"]
    assert row_from_json(orjson.dumps(old_json)) == row("click")


def test_events_round_trip_in_offset_order() -> None:
    records = [
        (3, 12, Event("u2", "buy", START_MS + 5, -0.0)),
        (3, 10, Event("u\n1", "a:b*", START_MS, 1e308)),
        (3, 11, Event("😀" * 200, "../..", START_MS - 1, 0.1)),
    ]
    data = events_to_parquet(records)
    assert data == events_to_parquet(list(reversed(records)))
    back = parquet_to_events(data)
    assert [(p, o) for p, o, _ in back] == [(3, 10), (3, 11), (3, 12)]
    assert back[0][2] == Event("u\n1", "a:b*", START_MS, 1e308)
    assert back[1][2] == Event("😀" * 200, "../..", START_MS - 1, 0.1)
    assert repr(back[2][2].value) == "-0.0"


def test_json_is_canonical_and_exact() -> None:
    original = row("a:b", count=3, total=-0.0, low=-0.0, high=0.0)
    assert row_to_json(original) == (
        b'{"count":3,"event_type":"a:b","late_count":0,"max":0.0,"mean":-0.0,"min":-0.0,"revision":0,"sum":-0.0,'
        b'"window":"tumbling_1m","window_end_ms":1763251200000,"window_start_ms":1763251140000}'
    )
    for value in (0.1 + 0.2, 1.7976931348623157e308, 5e-324, float("inf")):
        source = row("x", count=1, total=value, low=value, high=value)
        assert exact([row_from_json(row_to_json(source))]) == exact([source])
    # JSON has no infinity: it travels as its repr string, never as null.
    assert b'"sum":"inf"' in row_to_json(row("x", total=float("inf")))


def test_aggregate_key_uses_utc_hour_of_window_start() -> None:
    start = ms(datetime(2025, 11, 15, 23, 59, 30, tzinfo=timezone.utc))
    assert start == 1763251170000
    assert aggregate_key("", "tumbling_1m", start, 0) == (
        "aggregated/tumbling_1m/year=2025/month=11/day=15/hour=23/tumbling_1m-1763251170000-part0000.parquet"
    )
    assert aggregate_key("lake/", "hopping_1m", start + 30_000, 12) == (
        "lake/aggregated/hopping_1m/year=2025/month=11/day=16/hour=00/hopping_1m-1763251200000-part0012.parquet"
    )
    # The last millisecond of a year, and a year with a leading zero.
    assert aggregate_key("", "w", ms(datetime(2024, 12, 31, 23, 59, 59, 999000, tzinfo=timezone.utc)), 9999) == (
        "aggregated/w/year=2024/month=12/day=31/hour=23/w-1735689599999-part9999.parquet"
    )
    assert aggregate_key("", "w", ms(datetime(999, 1, 2, 3, tzinfo=timezone.utc)), 0).startswith(
        "aggregated/w/year=0999/month=01/day=02/hour=03/"
    )


def test_aggregate_key_encodes_window_names() -> None:
    assert aggregate_key("", "../x=1", 0, 0) == (
        "aggregated/%2E.%2Fx%3D1/year=1970/month=01/day=01/hour=00/%2E.%2Fx%3D1-0-part0000.parquet"
    )
    assert aggregate_key("", "_tmp", 0, 0).split("/")[1] == "%5Ftmp"
    with pytest.raises(ValueError, match="end with '/'"):
        aggregate_key("lake", "w", 0, 0)
    with pytest.raises(ValueError, match="part must be >= 0"):
        aggregate_key("", "w", 0, -1)


def test_archive_key_uses_first_event_hour_and_zero_padding() -> None:
    first = ms(datetime(2025, 11, 15, 23, 59, 59, 999000, tzinfo=timezone.utc))
    assert archive_key("", first, 3, 42) == (
        "events/year=2025/month=11/day=15/hour=23/part-00003-00000000000000000042.parquet"
    )
    assert archive_key("raw/", first + 1, 0, 2**63 - 1) == (
        "raw/events/year=2025/month=11/day=16/hour=00/part-00000-09223372036854775807.parquet"
    )
    # The name depends only on (partition, start offset) within the hour directory.
    assert archive_key("", first, 3, 42).rsplit("/", 1)[1] == archive_key("", 0, 3, 42).rsplit("/", 1)[1]
    with pytest.raises(ValueError, match="must be >= 0"):
        archive_key("", first, -1, 0)
    with pytest.raises(ValueError, match="end with '/'"):
        archive_key("raw", first, 0, 0)


# -- the rollups in the web API, and the batch job's status hash -----------------------------


def test_rollup_rows_in_the_api_carry_both_time_forms_and_survive_json() -> None:
    row = RollupRow("hourly", 1_793_570_400_000, 1_793_574_000_000, "é/../x", 3, 0.1 + 0.2, -1.5, float("inf"), 2,
                    0.25, 5.0, 5.0)
    api = rollup_to_api(row)
    assert api == {"period": "hourly", "event_type": "é/../x", "period_start": "2026-11-01T22:00:00Z",
                   "period_end": "2026-11-01T23:00:00Z", "period_start_ms": 1_793_570_400_000,
                   "period_end_ms": 1_793_574_000_000, "count": 3, "sum": 0.30000000000000004, "min": -1.5,
                   "max": "inf", "mean": 0.30000000000000004 / 3, "distinct_users": 2, "p50": 0.25, "p95": 5.0,
                   "p99": 5.0}
    assert orjson.loads(orjson.dumps(api)) == api  # floats exactly, inf as its repr


def _as_redis(fields: dict[str, str], counters: dict[str, int], into: dict[bytes, bytes]) -> None:
    """What HSET and HINCRBY do to a hash, for the encoding's round trip."""
    for name, value in fields.items():
        into[name.encode()] = value.encode()
    for name, amount in counters.items():
        into[name.encode()] = str(int(into.get(name.encode(), b"0")) + amount).encode()


def test_batch_runs_add_up_in_the_status_hash() -> None:
    first = BatchRun(finished_at_ms=2_000_500, duration_ms=1_500, ok=True, last_sealed_hour_ms=1_793_570_400_000,
                     periods_computed=7, windows_restated=3, rows_restated=5, objects_written=19, objects_skipped=1)
    fields, counters = batch_run_to_hash(first)
    assert fields == {"last_success_ms": "2000500", "duration_ms": "1500", "last_sealed_hour_ms": "1793570400000"}
    assert counters == {"runs": 1, "runs_failed": 0, "periods_computed": 7, "windows_restated": 3, "rows_restated": 5,
                        "objects_written": 19, "objects_skipped": 1}
    stored: dict[bytes, bytes] = {}
    assert batch_status_from_hash(stored) is None
    _as_redis(fields, counters, stored)
    # A failed run without a sealing bound: its time, a failure, and the last sealed hour and duration kept.
    failed = BatchRun(finished_at_ms=3_000_000, duration_ms=99, ok=False, last_sealed_hour_ms=None)
    _as_redis(*batch_run_to_hash(failed), stored)
    _as_redis(*batch_run_to_hash(first), stored)
    stored[b"from_a_later_version"] = b"ignored"
    status = batch_status_from_hash(stored)
    assert status == BatchStatus(last_success_ms=2_000_500, last_failure_ms=3_000_000, duration_ms=1_500,
                                 last_sealed_hour_ms=1_793_570_400_000,
                                 counters={"runs": 2, "runs_failed": 1, "periods_computed": 14, "windows_restated": 6,
                                           "rows_restated": 10, "objects_written": 38, "objects_skipped": 2})
    assert set(status.counters) == set(BATCH_COUNTERS)
    with pytest.raises(ValueError):
        batch_status_from_hash({b"runs": b"many"})
