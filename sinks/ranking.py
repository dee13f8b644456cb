"""A closed window's keys ranked by one measure statistic, from the lake (GET
/v1/aggregations/{aggregation}/{window}/top, and the dashboard's top keys).

The lake holds every key of a spec's window instance, whatever the aggregation's Redis output,
one object per stage-2 partition (formats/lake.py ``spec_aggregate_key``). So the ranking of the
newest closed window is: list the folder of the hour its start is in (or, when it holds none, the
newest hour folder before it), take the newest start there whose window the watermark has closed, GET
its objects, sort. The stores keep no ranking
of their own: Redis indexes windows per key.

A window's objects land as each stage-2 partition exports it, within the export delay after the
watermark passed its end; until the last one has, the ranking covers the partitions that have
(``parts`` says how many objects it read). Objects are cached by key and ETag, so a dashboard
polling the same window costs one LIST per poll; a restated object has a new ETag and is read again.

Blocking (S3 calls): run it in a thread, not on an event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from formats.aggregates import AggregateLayout, AggregateRow, parquet_to_aggregate_table, table_to_aggregate_rows
from formats.lake import HOUR_MS, parse_spec_aggregate_key, spec_aggregate_hour_prefix
from sinks.lake import LakeReader, ObjectCache, decoded_objects

__all__ = ["TopKeys", "rank_table", "read_top_keys"]

log = logging.getLogger(__name__)

_HOUR_LEVELS: Final = 4  # year=, month=, day=, hour=


@dataclass(frozen=True, slots=True)
class TopKeys:
    window_start_ms: int | None  # None: no closed window with objects in the folders searched
    rows: list[AggregateRow]  # ranked, best first
    keys: int = 0  # keys of the window whose rows have the measure (the ranked population)
    parts: int = 0  # objects read: stage-2 partitions that had exported the window
    skipped: list[str] = field(default_factory=list)  # keys of objects that are not this aggregation's files


def rank_table(table: pa.Table, layout: AggregateLayout, measure: str, statistic: str, descending: bool,
               n: int) -> pa.Table:
    """The `n` rows of `table` (the layout's schema) best by the measure's statistic, among rows whose
    measure has a value (its count is not null); ties in key order, so equal inputs rank alike."""
    table = table.filter(pc.is_valid(table.column(f"{measure}_count")))
    order = [(f"{measure}_{statistic}", "descending" if descending else "ascending", "at_end")]
    order += [(name, "ascending", "at_start") for name, _ in layout.key]  # null key parts first, as the files
    indices = pc.sort_indices(table, sort_keys=order)
    return table.take(indices[:n])


def read_top_keys(lake: LakeReader, cache: ObjectCache[pa.Table], aggregation: str, layout: AggregateLayout,
                  window: str, newest_start_ms: int, measure: str, statistic: str, descending: bool, n: int,
                  exact_start: bool = False) -> TopKeys:
    """The top `n` keys by the measure's statistic (layout columns) of the newest window instance starting at
    or before `newest_start_ms` that has objects in the lake (only that start if `exact_start`)."""
    folder = spec_aggregate_hour_prefix(lake.prefix, aggregation, window, newest_start_ms - newest_start_ms % HOUR_MS)
    folders = [folder] if exact_start else chain([folder], _hour_folders_before(lake, folder))
    for listed_folder in folders:
        listed = lake.list_etags(listed_folder)
        by_start: dict[int, list[str]] = {}
        for key in listed:
            parsed = parse_spec_aggregate_key(lake.prefix, aggregation, key)
            if parsed is not None and parsed.window == window and parsed.window_start_ms <= newest_start_ms \
                    and (not exact_start or parsed.window_start_ms == newest_start_ms):
                by_start.setdefault(parsed.window_start_ms, []).append(key)
        if by_start:
            start = max(by_start)
            return _rank(lake, cache, aggregation, layout, start, sorted(by_start[start]), listed, measure,
                         statistic, descending, n)
    return TopKeys(None, [])


def _hour_folders_before(lake: LakeReader, hour_folder: str) -> Iterator[str]:
    """The window's hour folders in the lake before `hour_folder` (``.../year=/month=/day=/hour=/``),
    newest first: one LIST per folder level visited, so an aggregation whose newest window is days old
    costs a few calls, not one per hour. The names are zero-padded, so they sort as the times they name."""
    base = hour_folder
    for _ in range(_HOUR_LEVELS):
        base = base[:base.rindex("/", 0, len(base) - 1) + 1]
    target = hour_folder[len(base):]

    def walk(prefix: str, level: int) -> Iterator[str]:
        for folder in sorted(lake.list_folders(prefix), reverse=True):
            relative = folder[len(base):]
            if relative > target[:len(relative)] or (level == _HOUR_LEVELS and relative == target):
                continue  # later than the hour asked for, or that hour itself (already listed)
            if level == _HOUR_LEVELS:
                yield folder
            else:
                yield from walk(folder, level + 1)

    yield from walk(base, 1)


def _rank(lake: LakeReader, cache: ObjectCache[pa.Table], aggregation: str, layout: AggregateLayout, start: int,
          keys: Sequence[str], etags: dict[str, str], measure: str, statistic: str, descending: bool,
          n: int) -> TopKeys:
    tables: dict[str, pa.Table] = {}
    skipped = []
    for key, value in decoded_objects(lake, cache, keys, etags,
                                      lambda body: parquet_to_aggregate_table(body, aggregation, layout),
                                      lambda table: table.nbytes):
        if isinstance(value, Exception):
            log.warning("top keys: s3://%s/%s is not a window file of %s (%s): left out", lake.bucket, key,
                        aggregation, value)
            skipped.append(key)
        else:
            tables[key] = value
    if not tables:
        return TopKeys(start, [], 0, 0, skipped)
    whole = pa.concat_tables([tables[key] for key in keys if key in tables])
    ranked = rank_table(whole, layout, measure, statistic, descending, n)
    population = len(whole) - whole.column(f"{measure}_count").null_count
    return TopKeys(start, table_to_aggregate_rows(ranked, aggregation, layout), population, len(tables), skipped)
