"""The raw archive: every valid event in S3 Parquet exactly once, files rolled by size and age.

Files are named by input partition and first offset (see sinks.lake.archive_key) and
written only if absent. If a file already exists, a previous run wrote it and crashed
before committing: its end offset (object metadata) says which records it holds, and
those are not written again, so a replay with different file boundaries never
duplicates a row.

Acknowledgements decide where faust may commit, and so where a restart begins. Records
are acked to faust only a whole file at a time: those of a file just written, or all
the records an existing file covers once the last of them has come by again. Commits
therefore land on file boundaries, and a restarted run's first file starts where an
existing file starts, which is what makes the name check above sufficient.

Records that are not archived (dead letters) pass through here too, only for their acks:
an ack never overtakes an earlier record's. faust 0.15.3 commits the first run of
consecutive acked offsets without checking that it starts at the committed offset (when
that is 0 or unknown, or one short of it), so a dead letter acked at once would let a
rebalance commit past valid records still waiting for their file.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from events import Event
from tables.partials import Record

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000

def _offset(record: tuple[int, int, Event]) -> int:
    return record[1]


PutArchive = Callable[[int, int, list[tuple[int, int, Event]]], Awaitable[Any]]


@dataclass(slots=True)
class _OpenFile:
    hour: int  # event-time hour of the first record: one file never spans two hour folders
    opened_at_s: float
    records: list[tuple[int, int, Event]] = field(default_factory=list)  # (partition, offset, event)
    acks: list[Any] = field(default_factory=list)  # faust events to ack once archived
    # (offset, ack) of records that are not rows of this file but must not be acked before
    # the rows preceding them: re-deliveries of buffered rows, and dead letters.
    pending: list[tuple[int, Any]] = field(default_factory=list)


@dataclass(slots=True)
class _Partition:
    open: _OpenFile | None = None
    archived_upto: int = -1  # last offset known to be in S3
    held: list[Any] = field(default_factory=list)  # acks of records an existing file covers

    def hold(self, offset: int, ack: Any) -> None:
        """Keep a covered record's ack until the existing file's last record has come by."""
        self.held.append(ack)
        if offset >= self.archived_upto:
            self.release()

    def release(self) -> None:
        for ack in self.held:
            ack.ack()
        self.held.clear()


class Archiver:
    def __init__(self, *, put_archive: PutArchive, max_records: int, max_age_s: float) -> None:
        self._put_archive = put_archive
        self.max_records = max_records
        self.max_age_s = max_age_s
        self._partitions: dict[int, _Partition] = {}
        self.files_written = 0

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's buffer: its new owner replays it from the committed offset."""
        self._partitions.pop(partition, None)

    def buffered(self) -> int:
        return sum(len(p.open.records) for p in self._partitions.values() if p.open is not None)

    async def add(self, record: Record, event: Event, ack: Any, now_s: float) -> None:
        await self.add_batch([(record.partition, record.offset, event, ack)], now_s)

    async def add_batch(self, items: list[tuple[int, int, Event | None, Any]], now_s: float) -> None:
        """Buffer (partition, offset, event, ack) in offset order; awaits only to roll a file.

        An item without an event (a dead letter) is not archived: its ack waits until every
        earlier record of its partition is acked.
        """
        partitions = self._partitions
        max_records = self.max_records
        for partition, offset, event, ack in items:
            state = partitions.get(partition)
            if state is None:
                state = partitions[partition] = _Partition()
            if event is None:
                if state.open is not None:
                    state.open.pending.append((offset, ack))
                else:
                    state.hold(offset, ack)  # acked now unless an existing file's records are held
                continue
            hour = event.event_ms // HOUR_MS
            while state.open is not None and state.open.hour != hour:
                await self._roll(partition, state)
            if offset <= state.archived_upto:
                state.hold(offset, ack)  # already in S3 from a run that did not commit
                continue
            current = state.open
            if current is None:
                current = state.open = _OpenFile(hour, now_s)
            elif offset <= current.records[-1][1]:
                # Delivered again (a re-read after faust dropped records): the row is already
                # buffered; the new delivery is acked with it.
                current.pending.append((offset, ack))
                continue
            current.records.append((partition, offset, event))
            current.acks.append(ack)
            if len(current.records) >= max_records:
                await self._roll(partition, state)

    async def roll_aged(self, now_s: float) -> None:
        for partition, state in list(self._partitions.items()):
            if state.open is not None and now_s - state.open.opened_at_s >= self.max_age_s:
                await self._roll(partition, state)

    async def roll_all(self) -> None:
        for partition, state in list(self._partitions.items()):
            while state.open is not None:
                await self._roll(partition, state)

    async def _roll(self, partition: int, state: _Partition) -> None:
        current, state.open = state.open, None
        if current is None or not current.records:
            return
        start_offset = current.records[0][1]
        outcome = await self._put_archive(partition, start_offset, current.records)
        end = outcome.end_offset
        state.archived_upto = max(state.archived_upto, end)
        records, acks = current.records, current.acks
        split = bisect_right(records, end, key=_offset)  # offsets ascend within a file
        covered = [(record[1], ack) for record, ack in zip(records[:split], acks[:split], strict=True)]
        covered += [(offset, ack) for offset, ack in current.pending if offset <= end]
        later = [(offset, ack) for offset, ack in current.pending if offset > end]
        if outcome.written:
            self.files_written += 1
            for _, ack in covered:
                ack.ack()
            log.debug("archived %s", outcome.key)
        else:
            log.info("archive file %s already held offsets up to %d; not written again", outcome.key, end)
            for offset, ack in sorted(covered, key=lambda item: item[0]):
                state.hold(offset, ack)
        if split < len(records):
            # Records past an existing, shorter file: the next file starts with them.
            state.open = _OpenFile(current.hour, current.opened_at_s, records[split:], acks[split:], later)
        else:
            # Dead letters after the file's last row: every record before them is archived.
            for offset, ack in later:
                state.hold(offset, ack)
