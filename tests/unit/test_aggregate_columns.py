"""A closed window instance's rows as columns (formats/aggregates.AggregateColumns) encode byte for byte as
the rows themselves: the Parquet file, the Redis index members and hashes, and the Redis keys, for any
layout, key values, and statistics (infinities, NaN sums, -0.0, absent measures) in any input order."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from formats.aggregates import (
    AggregateColumns,
    AggregateLayout,
    AggregateRow,
    MeasureStats,
    aggregate_columns_to_hashes,
    aggregate_columns_to_json,
    aggregate_columns_to_parquet,
    aggregate_row_to_hash,
    aggregate_row_to_json,
    aggregate_rows_to_parquet,
)
from formats.partials import key_part_columns, key_text
from formats.redis import (
    aggregate_hash_key,
    aggregate_hash_keys,
    aggregate_latest_key,
    aggregate_latest_keys,
    encode_keys,
)

SETTINGS = settings(max_examples=300, deadline=None)

START = 1_765_000_020_000
# No lone surrogates (not UTF-8) and no empty string part (no Redis key encodes one: formats/keys.py).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=6)
NAME = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=4)
PART = {"string": TEXT, "int": st.integers(-2**63, 2**63 - 1), "bool": st.booleans()}
VALUE = st.one_of(st.floats(width=64), st.sampled_from([-0.0, 0.0, math.inf, -math.inf, 5e-324, 1e16, 1e-5]))


@st.composite
def instances(draw: Any) -> tuple[AggregateLayout, list[AggregateRow]]:
    key_types = draw(st.lists(st.sampled_from(["string", "int", "bool"]), max_size=3))
    names = draw(st.lists(NAME, min_size=len(key_types) + 1, max_size=len(key_types) + 3, unique=True))
    layout = AggregateLayout(tuple(zip(names, key_types, strict=False)), tuple(names[len(key_types):]))
    keys = draw(st.lists(st.tuples(*[st.one_of(st.none(), PART[t]) for t in key_types]), max_size=12, unique=True))
    aggregation, window = draw(NAME), draw(NAME)
    rows = []
    for key in keys:
        measures = tuple(draw(st.one_of(st.none(), st.builds(MeasureStats, st.integers(1, 2**40), VALUE, VALUE,
                                                             VALUE))) for _ in layout.measures)
        rows.append(AggregateRow(aggregation, window, START, START + 60_000, key, measures))
    return layout, rows


def _columns(layout: AggregateLayout, rows: list[AggregateRow]) -> AggregateColumns:
    """The columns of rows given in their drawn order, absent measures holding garbage (they must not show)."""
    if rows:
        columns = AggregateColumns.of_rows(rows, layout)
        for m in range(len(layout.measures)):
            for statistic in (columns.sums, columns.mins, columns.maxs):
                statistic[columns.counts[:, m] == 0, m] = 7.5
        return columns
    none = np.zeros((0, len(layout.measures)))
    return AggregateColumns.in_key_order("a", "w", START, START + 60_000, [[] for _ in layout.key],
                                         none.astype(np.int64), none, none, none, layout)


def _ordered(rows: list[AggregateRow]) -> list[AggregateRow]:
    return sorted(rows, key=lambda row: tuple((part is not None, part) for part in row.key))


@SETTINGS
@given(instance=instances())
def test_columns_encode_as_their_rows(instance: tuple[AggregateLayout, list[AggregateRow]]) -> None:
    layout, rows = instance
    columns = _columns(layout, rows)
    ordered = _ordered(rows)
    assert len(columns) == len(rows)
    parts = key_part_columns([key_text(row.key) for row in rows], len(layout.key))  # as the export reads its keys
    assert repr(parts) == repr([[row.key[i] for row in rows] for i in range(len(layout.key))])  # True is not 1
    assert repr(columns.rows()) == repr(ordered)  # floats by repr: -0.0 apart from 0.0
    if rows:  # the rows path has no file of no rows; the export writes none
        assert aggregate_columns_to_parquet(columns, layout) == aggregate_rows_to_parquet(rows, layout)
    assert aggregate_columns_to_json(columns, layout) == [aggregate_row_to_json(row, layout) for row in ordered]
    assert aggregate_columns_to_hashes(columns, layout) == [list(aggregate_row_to_hash(row, layout).values())
                                                            for row in ordered]
    keys = encode_keys(columns.parts, len(columns))
    name, window = (rows[0].aggregation, rows[0].window) if rows else ("a", "w")
    assert aggregate_latest_keys("P:", name, window, keys) == [
        aggregate_latest_key("P:", name, window, row.key) for row in ordered]
    assert aggregate_hash_keys("P:", name, window, keys, START) == [
        aggregate_hash_key("P:", name, window, row.key, START) for row in ordered]


def test_a_template_keeps_percent_signs_and_non_finite_statistics() -> None:
    layout = AggregateLayout((("k%s", "string"),), ("m%d",))
    rows = [AggregateRow("a%b", "w%", START, START + 60_000, ("%s",), (MeasureStats(2, math.nan, -math.inf,
                                                                                      math.inf),)),
            AggregateRow("a%b", "w%", START, START + 60_000, (None,), (None,))]
    columns = _columns(layout, rows)
    members = aggregate_columns_to_json(columns, layout)
    assert members == [aggregate_row_to_json(row, layout) for row in _ordered(rows)]
    assert b'"sum":"nan"' in members[1] and b'"m%d":null' in members[0]
