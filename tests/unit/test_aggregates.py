"""A spec's closed-window rows (formats/aggregates.py) in every encoding, and their names in the lake
and Redis: exact round trips, typed columns, nulls, and keys no value can forge."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.parquet as pq

from formats.aggregates import (
    AggregateLayout,
    AggregateRow,
    MeasureStats,
    aggregate_row_from_json,
    aggregate_row_to_api,
    aggregate_row_to_hash,
    aggregate_row_to_json,
    aggregate_rows_to_parquet,
    layout_fields,
    parquet_to_aggregate_rows,
)
from formats.lake import spec_aggregate_key
from formats.redis import aggregate_hash_key, aggregate_latest_key, encode_key
from testing.reference import exact

START = 1_765_000_020_000
LAYOUT = AggregateLayout(key=(("device_id", "string"), ("port", "int"), ("up", "bool")), measures=("temp", "hum"))
ROWS = [
    AggregateRow("devices", "tumbling_1m", START, START + 60_000, ("d-2", 7, True),
                 (MeasureStats(2, 43.0, 21.5, 21.5), None)),
    AggregateRow("devices", "tumbling_1m", START, START + 60_000, ("d-1", None, False),
                 (MeasureStats(1, -0.0, -0.0, -0.0), MeasureStats(3, math.inf, 1.0, 1e308)), 2, 1),
]


def test_parquet_has_one_typed_column_per_key_part_and_statistic_and_round_trips() -> None:
    body = aggregate_rows_to_parquet(ROWS, LAYOUT)
    table = pq.read_table(pa.BufferReader(body))
    assert table.schema.field("port").type == pa.int64() and table.schema.field("up").type == pa.bool_()
    assert table.column_names == ["window_start", "window_end", "window", "device_id", "port", "up", "temp_count",
                                  "temp_sum", "temp_min", "temp_max", "temp_mean", "hum_count", "hum_sum", "hum_min",
                                  "hum_max", "hum_mean", "revision", "late_count"]
    assert table.column("device_id").to_pylist() == ["d-1", "d-2"]  # sorted by key
    assert table.column("hum_mean").to_pylist()[1] is None and table.column("port").to_pylist()[0] is None
    assert aggregate_rows_to_parquet(list(reversed(ROWS)), LAYOUT) == body  # deterministic
    again = parquet_to_aggregate_rows(body, "devices", LAYOUT)
    assert exact(again) == exact(sorted(ROWS, key=lambda r: r.key[0]))  # type: ignore[arg-type]


def test_json_and_hash() -> None:
    for row in ROWS:
        assert aggregate_row_from_json(aggregate_row_to_json(row, LAYOUT), LAYOUT) == row
    api = aggregate_row_to_api(ROWS[1], LAYOUT)
    assert api["key"] == {"device_id": "d-1", "port": None, "up": False}
    assert api["measures"]["hum"] == {"count": 3, "sum": "inf", "min": 1.0, "max": 1e308, "mean": "inf"}
    assert aggregate_row_to_api(ROWS[0], LAYOUT)["measures"]["hum"] is None
    fields = aggregate_row_to_hash(ROWS[0], LAYOUT)
    assert list(fields) == list(layout_fields(LAYOUT))  # the same fields in the same order, for every row
    assert fields["key.port"] == "7" and fields["key.up"] == "true" and fields["hum.count"] == ""
    assert aggregate_row_to_hash(ROWS[1], LAYOUT)["temp.sum"] == "-0.0"


def test_names_in_the_lake_and_redis() -> None:
    assert spec_aggregate_key("lake/", "devices", "tumbling_1m", START, 3) == (
        "lake/aggregated/devices/tumbling_1m/year=2025/month=12/day=06/hour=05/tumbling_1m-1765000020000-"
        "part0003.parquet")
    assert encode_key(("a:b/..", 7, True, None, -1)) == "a%3Ab%2F..:7:true:%00:-1"
    hash_key = aggregate_hash_key("P:", "devices", "tumbling_1m", ("d-1",), START)
    assert hash_key == f"P:agg:devices:tumbling_1m:d-1:{START}"
    assert aggregate_latest_key("P:", "devices", "tumbling_1m", ("d-1", 2)) == "P:agglatest:devices:tumbling_1m:d-1:2"
    # Injective for one aggregation's parts (their types are fixed): no value forges another key.
    keys = {encode_key((text, n)) for text in ("a", "a:1", "1", "%00", ":") for n in (1, -1, 11)}
    assert len(keys) == 15
