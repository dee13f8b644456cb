"""`make bench SPEC=...`: the pipeline on an aggregation spec with a key shape, and its exactness.

The key shape is how many keys each aggregation has in a minute of event time (`keys`) and how many
events each key gets in it (`events_per_key`): the preload's event time advances one minute (the size
of the default windows) per keys x events_per_key events, and commands/loadgen.py's
SpecEventGenerator gives the n-th event key number n mod keys. `field_keys` gives a key field fewer
values than `keys` (`--field-keys device.site=1000`: 100,000 devices in 1,000 sites), so that an
aggregation by site has a site's number of keys, not a device's.

The run is exact when the lake holds, for every aggregation and window, as many rows, as many events
in them and the same sum of the first measure as the generator meant (SpecRecord.counted), summed
over every window closed by the data: a check of every row would hold millions of them twice in
this process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aggregations.spec import Spec, SpecError, article_spec, parse_spec
from commands.loadgen import AnomalySchedule, SpecEventGenerator, SpecRecord
from formats.aggregates import AggregateRow, parquet_to_aggregate_rows
from tables.windows import DEFAULT_WINDOWS, WindowSpec, parse_windows

MINUTE_MS = 60_000
WINDOWS: tuple[WindowSpec, ...] = parse_windows(DEFAULT_WINDOWS)  # the bench's worker runs the default WINDOWS

Totals = dict[tuple[str, str], tuple[int, int, float]]  # (aggregation, window) -> rows, events, sum of measure 0


@dataclass(frozen=True, slots=True)
class KeyShape:
    spec_path: Path
    spec: Spec
    keys: int  # keys per aggregation in a minute of event time
    events_per_key: int  # events per key in that minute
    field_keys: tuple[tuple[str, int], ...] = ()  # (key field's path, its values) for fields with fewer than `keys`

    @classmethod
    def load(cls, spec_path: Path, keys: int, events_per_key: int,
             field_keys: tuple[tuple[str, int], ...] = ()) -> KeyShape:
        """The shape of a spec's run; SpecError for a spec the worker would not run as a spec, or for
        `field_keys` that name no key field of it."""
        names = [w.name for w in WINDOWS]
        spec = parse_spec(spec_path.read_text(encoding="utf-8"), names)
        if spec == article_spec(names):
            raise SpecError("it is the article's job, which the worker runs as without AGGREGATIONS (docs/your-own-"
                            "events.md): measure it with --event-types N (make bench EVENT_TYPES=N)")
        shape = cls(spec_path, spec, keys, events_per_key, field_keys)
        try:
            shape.generator(seed=0)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        return shape

    def generator(self, seed: int) -> SpecEventGenerator:
        """The shape's events (commands/loadgen.py), reproducible by seed."""
        return SpecEventGenerator(self.spec, keys=self.keys, field_keys=dict(self.field_keys), seed=seed)

    def event_ms(self, base_ms: int, index: int) -> int:
        return base_ms + index * MINUTE_MS // (self.keys * self.events_per_key)


@dataclass
class Reference:
    """What the preloaded events mean, per window instance: the keys it has, its events and their sum."""

    spec: Spec
    keys: dict[tuple[str, str, int], set[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(set))
    events: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    sums: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))

    def add(self, record: SpecRecord) -> None:
        kept = {a.name: a.windows for a in self.spec.aggregations}
        for counted in record.counted:
            for window in WINDOWS:
                if window.name not in kept[counted.aggregation]:
                    continue
                start = record.event_ms - record.event_ms % window.step_ms
                while start > record.event_ms - window.size_ms:
                    self.keys[(counted.aggregation, window.name, start)].add(counted.key)
                    self.events[(counted.aggregation, window.name)] += 1
                    self.sums[(counted.aggregation, window.name)] += counted.measures[0]
                    start -= window.step_ms

    def totals(self) -> Totals:
        rows: dict[tuple[str, str], int] = defaultdict(int)
        for (aggregation, window, _), keys in self.keys.items():
            rows[(aggregation, window)] += len(keys)
        return {k: (rows[k], self.events[k], self.sums[k]) for k in rows}


class Recording:
    """A SpecEventGenerator whose records also go to a Reference (produce_events takes either)."""

    def __init__(self, generator: SpecEventGenerator, reference: Reference) -> None:
        self.generator = generator
        self.reference = reference
        self.schedule: AnomalySchedule = generator.schedule

    def record(self, event_ms: int) -> SpecRecord:
        record = self.generator.record(event_ms)
        self.reference.add(record)
        return record


def parse_field_keys(texts: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """`--field-keys` arguments, each PATH=N; ValueError naming the first that is not."""
    parsed: dict[str, int] = {}
    for text in texts:
        path, _, count = text.partition("=")
        if not path or not count.isdigit() or path in parsed:
            raise ValueError(f"{text!r}: each is a key field's path, =, and its number of values (device.site=1000), "
                             "each path once")
        parsed[path] = int(count)
    return tuple(parsed.items())


def lake_totals(client: Any, bucket: str, spec: Spec) -> Totals:
    """The same totals from every object of every aggregation in the lake."""
    def rows() -> Iterator[AggregateRow]:
        for aggregation in spec.aggregations:
            layout = aggregation.layout()
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket,
                                                                          Prefix=f"aggregated/{aggregation.name}/"):
                for item in page.get("Contents", []):
                    body = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                    yield from parquet_to_aggregate_rows(body, aggregation.name, layout)

    return row_totals(rows())


def row_totals(rows: Iterable[AggregateRow]) -> Totals:
    """Per (aggregation, window): the rows, the events in them and the sum of their first measure."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    events: dict[tuple[str, str], int] = defaultdict(int)
    sums: dict[tuple[str, str], float] = defaultdict(float)
    for row in rows:
        stats = row.measures[0]
        counts[(row.aggregation, row.window)] += 1
        events[(row.aggregation, row.window)] += 0 if stats is None else stats.count
        sums[(row.aggregation, row.window)] += 0.0 if stats is None else stats.sum
    return {k: (counts[k], events[k], sums[k]) for k in counts}
