"""Reading a period's raw files: what is counted, and what is skipped and why.

An object under a period's hour folders is counted only if its name is one the archiver
writes (formats.lake.archive_key), it is a Parquet file of RAW_SCHEMA (formats/raw.py), and its
rows belong to it: the partition of its name, offsets from its first offset on, event times
within its hour. Anything else is foreign: skipped with a reason, never counted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

from formats.lake import HOUR_MS, RawKey, parse_raw_key
from formats.raw import read_raw_table

__all__ = ["FOREIGN_NAME", "RESTATE_INPUT_SCHEMA", "ROLLUP_INPUT_SCHEMA", "PeriodInputs", "RawFileStats",
           "check_raw_table", "raw_file_problem"]

# The columns the rollups read.
ROLLUP_INPUT_SCHEMA: Final = pa.schema([("user_id", pa.string()), ("event_type", pa.string()),
                                        ("value", pa.float64())])
# The columns restatement reads (batch/restate.py folds in stage 1's order: partition, then offset).
RESTATE_INPUT_SCHEMA: Final = pa.schema([("partition", pa.int32()), ("offset", pa.int64()),
                                         ("event_type", pa.string()), ("timestamp", pa.timestamp("ms", tz="UTC")),
                                         ("value", pa.float64())])

FOREIGN_NAME: Final = "foreign name: not part-PPPPP-OOOOOOOOOOOOOOOOOOOO.parquet"


@dataclass(frozen=True, slots=True)
class RawFileStats:
    """What the rule of check_raw_table looks at in one raw file (None: no non-null value)."""

    rows: int
    min_partition: int | None
    max_partition: int | None
    min_offset: int | None
    min_event_ms: int | None
    max_event_ms: int | None
    nulls: int = 0  # null values over its columns (Spark reads a missing column as nulls)


def raw_file_problem(stats: RawFileStats, name: RawKey) -> str | None:
    """Why a raw file does not belong where its name puts it, or None if it does. The one home of
    the rule: the embedded engine (check_raw_table) and the Spark job (batch/spark_job.py) compute
    the stats each their own way and ask this."""
    assert name.hour_start_ms is not None and name.partition is not None and name.start_offset is not None
    if stats.rows == 0:
        return "an empty file (the archiver never writes one)"
    if stats.nulls:
        return f"null values, which the archiver never writes ({stats.nulls})"
    if stats.min_partition != name.partition or stats.max_partition != name.partition:
        return f"rows of another partition than {name.partition}"
    if stats.min_offset is None or stats.min_offset < name.start_offset:
        return f"offsets before the file's first offset {name.start_offset}"
    low, high = stats.min_event_ms, stats.max_event_ms
    if low is None or high is None or low < name.hour_start_ms or high >= name.hour_start_ms + HOUR_MS:
        return "event times outside its hour folder"
    return None


def check_raw_table(table: pa.Table, name: RawKey) -> str | None:
    """Why a raw table does not belong where its name puts it, or None if it does."""
    partitions = pc.min_max(table.column("partition"))
    times = pc.min_max(table.column("timestamp").cast(pa.int64()))
    stats = RawFileStats(table.num_rows, partitions["min"].as_py(), partitions["max"].as_py(),
                         pc.min(table.column("offset")).as_py(), times["min"].as_py(), times["max"].as_py(),
                         sum(column.null_count for column in table.columns))
    return raw_file_problem(stats, name)


@dataclass(slots=True)
class PeriodInputs:
    """Streams the counted rows of a period's raw objects, one file in memory at a time.

    `read(key)` returns an object's bytes (S3 errors propagate: the hour cannot be read).
    After the stream: `events` counted, `skipped` key -> reason, `archive_files` objects with an
    archiver's name (counted or not)."""

    prefix: str
    listing: Mapping[str, str]
    read: Callable[[str], bytes]
    events: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    archive_files: int = 0
    schema: pa.Schema = ROLLUP_INPUT_SCHEMA  # the columns streamed
    read_table: Callable[[bytes], pa.Table] = read_raw_table  # a file's bytes as a table (or ValueError)

    def batches(self) -> Iterator[pa.RecordBatch]:
        for key in sorted(self.listing):  # the lake's order: the same input, the same sums bit for bit
            name = parse_raw_key(self.prefix, key)
            if not name.archive_name:
                self.skipped[key] = FOREIGN_NAME
                continue
            self.archive_files += 1
            try:
                table = self.read_table(self.read(key))
            except (ValueError, pa.ArrowException) as exc:
                self.skipped[key] = f"not a raw archive file: {str(exc)[:200]}"
                continue
            reason = check_raw_table(table, name)
            if reason is not None:
                self.skipped[key] = reason
                continue
            self.events += table.num_rows
            yield from table.select(self.schema.names).to_batches()

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self.batches())
