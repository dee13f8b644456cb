"""A spec's events in the raw archive, judged again: what each aggregation counts of a span's raw files.

Stage 1 archives every record with a good time (formats/raw.py RAW_FORMAT 2, the record as written),
including those one aggregation rejects, so the batch layer judges each again with the same judge
(aggregations/judge.py) and gets what stage 1 counted: the same keys, measures and rejections. The
files' checks are batch/inputs.py's; a format-1 file (the article's events, archived before the
deployment added its spec) is read as the article's JSON records (formats/raw.read_raw_records).

The placement in time is the archived event time (which the judge gives back for the same record and
spec); the judge's time bounds and size limit were stage 1's business, so none is applied here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import pyarrow as pa

from aggregations.judge import Counted, SpecJudge
from aggregations.spec import Aggregation, Spec
from batch.inputs import PeriodInputs
from formats.events import Rejection
from formats.raw import RAW_SPEC_SCHEMA, read_raw_records

__all__ = ["JudgedEvents", "event_table", "judge_inputs", "judge_to_tables", "spec_inputs"]

_NO_LIMIT = 2**63


@dataclass(slots=True)
class JudgedEvents:
    """What one aggregation counts of a span's events, one list entry per counted event, in the order
    read (the lake's: by file, then offset)."""

    partitions: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    event_ms: list[int] = field(default_factory=list)
    counted: list[Counted] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.offsets)


def spec_inputs(prefix: str, listing: Mapping[str, str], read: Callable[[str], bytes]) -> PeriodInputs:
    """The raw files of `listing` as a spec reads them (every column of RAW_SPEC_SCHEMA)."""
    return PeriodInputs(prefix, listing, read, schema=RAW_SPEC_SCHEMA, read_table=read_raw_records)


def judge_inputs(inputs: PeriodInputs, spec: Spec) -> list[JudgedEvents]:
    """Per aggregation of the spec, in its order, what it counts of the inputs' events."""
    judged, judge = [JudgedEvents() for _ in spec.aggregations], SpecJudge(spec)
    for batch in inputs.batches():
        _judge_batch(batch, judge, judged)
    return judged


def judge_to_tables(inputs: PeriodInputs, spec: Spec) -> list[pa.Table]:
    """judge_inputs as one table per aggregation (`event_table`), built one file at a time so that a
    day's events are held as columns, not as Python objects."""
    parts: list[list[pa.Table]] = [[] for _ in spec.aggregations]
    judge = SpecJudge(spec)
    for batch in inputs.batches():
        judged = [JudgedEvents() for _ in spec.aggregations]
        _judge_batch(batch, judge, judged)
        for tables, aggregation, events in zip(parts, spec.aggregations, judged, strict=True):
            tables.append(event_table(aggregation, events))
    return [pa.concat_tables(tables) if tables else event_table(aggregation, JudgedEvents())
            for tables, aggregation in zip(parts, spec.aggregations, strict=True)]


_KEY_TYPES: Final = {"string": pa.string(), "int": pa.int64(), "bool": pa.bool_()}


def event_table(aggregation: Aggregation, events: JudgedEvents) -> pa.Table:
    """An aggregation's counted events as columns k0.. (key parts), m0.. (measures, null when left out),
    d0.. (distinct fields): numbered, since a key part's and a measure's column may share a name."""
    counted = events.counted
    arrays = {f"k{i}": pa.array([c.key[i] for c in counted], type=_KEY_TYPES[part.type])
              for i, part in enumerate(aggregation.key)}
    arrays |= {f"m{i}": pa.array([c.measures[i] for c in counted], type=pa.float64())
               for i in range(len(aggregation.measures))}
    arrays |= {f"d{i}": pa.array([c.distinct[i] for c in counted], type=_KEY_TYPES[field.type])
               for i, field in enumerate(aggregation.distinct)}
    return pa.table(arrays)


def _judge_batch(batch: pa.RecordBatch, judge: SpecJudge, judged: list[JudgedEvents]) -> None:
    columns = [batch.column(name).to_pylist() for name in ("partition", "offset")]
    times = batch.column("timestamp").cast(pa.int64()).to_pylist()
    for partition, offset, event_ms, raw in zip(*columns, times, batch.column("raw").to_pylist(), strict=True):
        judgement = judge.judge(raw, max_bytes=_NO_LIMIT, min_event_ms=-_NO_LIMIT, max_event_ms=_NO_LIMIT)
        if isinstance(judgement, Rejection):
            continue  # the spec's time field changed since stage 1 archived it: counted by none
        for events, result in zip(judged, judgement.results, strict=True):
            if isinstance(result, Counted):
                events.partitions.append(partition)
                events.offsets.append(offset)
                events.event_ms.append(event_ms)
                events.counted.append(result)
