"""In-memory stand-ins for what the stages and the batch layer use: a broker, a state store over its
changelog, the lake (the stages' writes, and the batch layer's objects: MemoryLake) and Redis, and the
watermark board. A send can be made to fail at its Nth call, which is how
the stage tests crash a stage at every step of a batch."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from types import SimpleNamespace
from typing import Any

import orjson

from formats.aggregates import AggregateColumns, AggregateRow
from formats.batch import RollupRow, parquet_to_rollups
from formats.chunks import encode_in_runs
from formats.events import Event
from formats.lake import archive_key
from formats.partials import PARTIALS_BYTES, PartialKey, encode_partial_columns
from formats.raw import events_to_parquet
from formats.rows import WindowRow
from formats.side_outputs import source_offset
from formats.state import TOTALS_PACK_PREFIX, encode_totals_columns, pack_key
from sinks.lake import ArchiveOutcome
from tables.changelog import apply_changes, changes_of
from tables.families import Family
from tables.partials import BatchOutcome, Limits, PartitionPartials, Record, fold_records
from tables.totals import InstanceTotals
from tables.windows import WindowSpec


class CrashError(Exception):
    """The simulated crash: raised by the Nth send."""


@dataclass
class Sent:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    offset: int


@dataclass
class FakeBroker:
    """Every send lands at once (acks=all and ordered), until the one asked to fail."""

    transactional = False  # as a partition's writer (Producer.writer)

    partitions: int = 2
    logs: dict[tuple[str, int], list[Sent]] = field(default_factory=lambda: defaultdict(list))
    sends: int = 0
    fail_at: int | None = None

    async def send(self, topic: str, value: bytes | None, *, key: bytes | None = None, partition: int | None = None,
                   headers: Any = None, timestamp_ms: int | None = None) -> asyncio.Future[Any]:
        self.sends += 1
        if self.fail_at is not None and self.sends >= self.fail_at:
            raise CrashError(f"crash at send {self.sends}")
        assert partition is not None, "the stages name the partition of every send"
        log = self.logs[(topic, partition)]
        log.append(Sent(key, value, list(headers or []), len(log)))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(offset=len(log) - 1))
        return future

    async def flush(self) -> None:
        return None

    async def writer(self, owner: str) -> FakeBroker:
        """A stage partition's writer (kafka_io.clients.Producer.writer): the broker itself, every send durable."""
        return self

    async def commit(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def log(self, topic: str, partition: int) -> list[Sent]:
        return self.logs[(topic, partition)]


class FakeStore:
    """A PartitionStore over the fake broker's changelog partition."""

    def __init__(self, broker: FakeBroker, topic: str, partition: int) -> None:
        self.broker, self.topic, self.partition = broker, topic, partition
        self.writer = broker

    def restore(self) -> dict[bytes, bytes]:
        items: dict[bytes, bytes] = {}
        apply_changes(items, changes_of(self.broker.log(self.topic, self.partition)))
        return items

    async def put(self, key: bytes, value: bytes | None) -> None:
        await self.broker.send(self.topic, value, key=key, partition=self.partition)

    async def commit(self) -> None:
        await self.writer.commit()

    async def durable(self) -> None:
        if not self.writer.transactional:
            await self.commit()

    def close(self) -> None:
        return None


def partials_messages(partition: int, entries: list[tuple[PartialKey, list[float]]]) -> list[bytes]:
    """Stage 1's partials messages of these entries: one column body per window instance."""
    partials = PartitionPartials(partition, dict(entries))
    return [encode_partial_columns(partition, instance, range(len(instance)))
            for instance in partials.instances.values()]


def per_key_messages(partition: int, entries: list[tuple[PartialKey, list[float]]]) -> list[bytes]:
    """An earlier version's partials messages of these entries, which stage 2 still reads."""
    return generation2_messages(partition, entries)


def generation2_messages(partition: int, entries: Iterable[tuple[PartialKey, list[float]]]) -> list[bytes]:
    """Partials messages of generation 2 (formats/partials.py) carrying `entries`, as few as
    PARTIALS_BYTES allows, as the version before the columns wrote them."""
    rows = [[key.window, key.start_ms, key.event_type, partial] for key, partial in entries]
    if not rows:
        return []
    return [body for _, _, body in encode_in_runs(rows, lambda run: orjson.dumps({"p": partition, "e": run}),
                                                  PARTIALS_BYTES)]


def stored_packs(prefix: bytes, entries: list[tuple[PartialKey, Any]]) -> dict[bytes, bytes]:
    """The stored items of a stage state holding `entries` in an earlier version's packs, one per window
    instance: `{"w": window, "s": start_ms, "e": [[event_type, value], ...]}` (a stage-2 value is
    `{partition: partial}`), which this version still restores."""
    by_instance: dict[tuple[str, int], list[list[Any]]] = defaultdict(list)
    for key, value in entries:
        by_instance[(key.window, key.start_ms)].append([key.event_type, value])
    return {pack_key(prefix, seq): orjson.dumps({"w": window, "s": start_ms, "e": rows})
            for seq, ((window, start_ms), rows) in enumerate(by_instance.items())}


def stored_totals(entries: list[tuple[PartialKey, dict[int, list[float]]]]) -> dict[bytes, bytes]:
    """Stage 2's stored items holding these totals in packs as this version writes them."""
    instances: dict[tuple[str, int], InstanceTotals] = {}
    for key, parts in entries:
        instance = instances.setdefault((key.window, key.start_ms), InstanceTotals(key.window, key.start_ms))
        instance.set(instance.slot(key.event_type), parts)
    return {pack_key(TOTALS_PACK_PREFIX, seq): encode_totals_columns(instance, range(len(instance)))
            for seq, instance in enumerate(instances.values())}


def last_source_offset(broker: FakeBroker, topic: str, partition: int) -> int:
    offsets = [source_offset(record.headers) for record in broker.log(topic, partition)]
    return max((o for o in offsets if o is not None), default=-1)


class FakeLake:
    """S3 for the archive (written only if absent) and the aggregates (overwritten)."""

    def __init__(self) -> None:
        self.files: dict[int, list[int]] = {}
        self.aggregates: dict[tuple[str, int, int], list[WindowRow]] = {}

    async def put_archive(self, partition: int, start_offset: int, records: list[Any]) -> ArchiveOutcome:
        existing = self.files.get(start_offset)
        if existing is not None:
            return ArchiveOutcome(str(start_offset), existing[-1], written=False)
        self.files[start_offset] = [offset for _, offset, _ in records]
        return ArchiveOutcome(str(start_offset), records[-1][1], written=True)


@dataclass
class FakeOutputs:
    lake: FakeLake = field(default_factory=FakeLake)
    redis: dict[tuple[str, int, str], WindowRow] = field(default_factory=dict)
    exports: int = 0
    fail_at: int | None = None  # the Nth export raises
    alerts_active: dict[str, bytes] = field(default_factory=dict)  # Redis' alerts:active hash
    alerts_recent: dict[bytes, int] = field(default_factory=dict)  # Redis' alerts:recent sorted set
    aggregate_redis: dict[tuple[Any, ...], AggregateRow] = field(default_factory=dict)  # a spec's rows by key

    async def write_alerts(self, alerts: list[tuple[str, str, int, bytes]]) -> None:
        for state, name, end_ms, body in alerts:
            if state == "firing":
                self.alerts_active[name] = body
            else:
                self.alerts_active.pop(name, None)
            self.alerts_recent[body] = end_ms

    async def put_archive(self, partition: int, start_offset: int, records: list[Any]) -> ArchiveOutcome:
        return await self.lake.put_archive(partition, start_offset, records)

    async def export_window(self, window: str, start_ms: int, part: int, rows: list[WindowRow]) -> str:
        self.exports += 1
        if self.fail_at is not None and self.exports >= self.fail_at:
            raise CrashError(f"crash at export {self.exports}")
        self.lake.aggregates[(window, start_ms, part)] = list(rows)
        for row in rows:
            self.redis[(row.window, row.window_start_ms, row.event_type)] = row
        return f"aggregated/{window}/{start_ms}-{part}"

    async def export_aggregate(self, family: Family, part: int, columns: AggregateColumns) -> str:
        """export_window for a spec's family: the lake by (family, start, part), Redis by the row's key (as if
        every window were written there)."""
        self.exports += 1
        if self.fail_at is not None and self.exports >= self.fail_at:
            raise CrashError(f"crash at export {self.exports}")
        rows = columns.rows()
        self.lake.aggregates[(family.name, columns.window_start_ms, part)] = rows  # type: ignore[assignment]
        for row in rows:
            self.aggregate_redis[(row.aggregation, row.window, row.window_start_ms, row.key)] = row
        return f"aggregated/{family.name}/{columns.window_start_ms}-{part}"


@dataclass
class FakeBoard:
    low_ms: int | None = None

    def low(self) -> int | None:
        return self.low_ms


@dataclass
class FakeClock:
    now_ms: int = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now_ms

    def monotonic(self) -> float:
        return self.now_ms / 1000


class MemoryLake:
    """The lake as a dict, with an ETag per write, an optional crash at the Nth put, and the reads made
    (`lists`: prefixes listed, `gets`: keys read)."""

    bucket = "lake"

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.objects: dict[str, tuple[bytes, str]] = {}
        self.puts = 0
        self.crash_at: int | None = None
        self._version = 0
        self.lists: list[str] = []
        self.gets: list[str] = []

    def list_etags(self, prefix: str) -> dict[str, str]:
        self.lists.append(prefix)
        return {k: etag for k, (_, etag) in self.objects.items() if k.startswith(prefix)}

    def get_bytes(self, key: str) -> bytes:
        self.gets.append(key)
        return self.objects[key][0]

    def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.puts += 1
        if self.crash_at is not None and self.puts == self.crash_at:
            raise SystemExit("crash")
        self.raw_put(key, body)

    def raw_put(self, key: str, body: bytes) -> None:
        self._version += 1
        self.objects[key] = (body, f"v{self._version}")

    def archive(self, partition: int, start_offset: int, events: list[tuple[str, str, int, float]]) -> str:
        records = [(partition, start_offset + i, Event(user_id=u, event_type=t, event_ms=ms, value=v))
                   for i, (u, t, ms, v) in enumerate(events)]
        key = archive_key(self.prefix, events[0][2], partition, start_offset)
        self.raw_put(key, events_to_parquet(records))
        return key

    def rollups(self) -> dict[str, list[RollupRow]]:
        return {k: parquet_to_rollups(body) for k, (body, _) in self.objects.items()
                if k.startswith(f"{self.prefix}aggregated/")}


@dataclass(slots=True)
class FoldOutcome(BatchOutcome):
    """fold_batch's outcome: also the valid (Record, Event) and, per partition, the keys it changed."""

    valid: list[tuple[Record, Event]] = field(default_factory=list)
    dirty: dict[int, set[PartialKey]] = field(default_factory=dict)


def fold_batch(
    records: Iterable[Record],
    partitions: dict[int, PartitionPartials],
    windows: Sequence[WindowSpec],
    frontiers_ms: Mapping[int, int | None],
    limits: Limits,
) -> FoldOutcome:
    """fold_records for Records of any partitions, in their order; also lists the valid (Record, Event)
    and, per partition, the keys the batch changed (taken from the partials' dirty slots)."""
    outcome = FoldOutcome()
    for partition, run in groupby(records, key=attrgetter("partition")):
        batch = list(run)
        fold_records(partition, batch, partitions[partition], windows, frontiers_ms.get(partition), limits, outcome)
        for record in batch:
            decoded = limits.decode(record)
            if isinstance(decoded, Event):
                outcome.valid.append((record, decoded))
    for partition, partials in partitions.items():
        dirty = {instance.key(slot) for instance, slots in partials.take_dirty() for slot in slots}
        if dirty:
            outcome.dirty[partition] = dirty
    return outcome
