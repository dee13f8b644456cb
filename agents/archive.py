"""The raw archive: every valid event in S3 Parquet exactly once, files rolled by size and age.

Files are named by input partition and first offset (see sinks.lake.archive_key) and
written only if absent. If a file already exists, a previous run wrote it and crashed
before committing: its end offset (object metadata) says which records it holds, and
those are dropped from the buffer, so a replay with different file boundaries never
duplicates a row. The records of a file are acknowledged to faust only once the file is
in S3, so offsets are never committed past an event that is not archived.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from events import Event
from tables.partials import Record

log = logging.getLogger(__name__)
HOUR_MS = 3_600_000

PutArchive = Callable[[int, int, list[tuple[int, int, Event]]], Awaitable[Any]]


@dataclass(slots=True)
class _OpenFile:
    hour: int  # event-time hour of the first record: one file never spans two hour folders
    opened_at_s: float
    records: list[tuple[int, int, Event]] = field(default_factory=list)  # (partition, offset, event)
    acks: list[Any] = field(default_factory=list)  # faust events to ack once archived


class Archiver:
    def __init__(self, *, put_archive: PutArchive, max_records: int, max_age_s: float) -> None:
        self._put_archive = put_archive
        self.max_records = max_records
        self.max_age_s = max_age_s
        self._files: dict[int, _OpenFile] = {}
        self._archived_upto: dict[int, int] = {}  # partition -> last offset known to be in S3
        self.files_written = 0

    def forget(self, partition: int) -> None:
        """Drop a revoked partition's buffer: its new owner replays it from the committed offset."""
        self._files.pop(partition, None)
        self._archived_upto.pop(partition, None)

    def buffered(self) -> int:
        return sum(len(f.records) for f in self._files.values())

    async def add(self, record: Record, event: Event, ack: Any, now_s: float) -> None:
        partition = record.partition
        if record.offset <= self._archived_upto.get(partition, -1):
            ack.ack()  # already in S3 from before a restart
            return
        hour = event.event_ms // HOUR_MS
        current = self._files.get(partition)
        if current is not None and (current.hour != hour or len(current.records) >= self.max_records):
            await self._roll(partition)
            current = self._files.get(partition)
        if current is None:
            current = self._files[partition] = _OpenFile(hour, now_s)
        current.records.append((partition, record.offset, event))
        current.acks.append(ack)

    async def roll_aged(self, now_s: float) -> None:
        for partition, current in list(self._files.items()):
            if current.records and now_s - current.opened_at_s >= self.max_age_s:
                await self._roll(partition)

    async def roll_all(self) -> None:
        for partition in list(self._files):
            await self._roll(partition)

    async def _roll(self, partition: int) -> None:
        current = self._files.pop(partition, None)
        if current is None or not current.records:
            return
        start_offset = current.records[0][1]
        outcome = await self._put_archive(partition, start_offset, current.records)
        end = outcome.end_offset
        self._archived_upto[partition] = end
        kept = [(r, a) for r, a in zip(current.records, current.acks, strict=True) if r[1] > end]
        for record, ack in zip(current.records, current.acks, strict=True):
            if record[1] <= end:
                ack.ack()
        if outcome.written:
            self.files_written += 1
            log.debug("archived %s", outcome.key)
        else:
            log.info("archive file %s already held offsets up to %d; skipped them", outcome.key, end)
        if kept:
            remainder = _OpenFile(kept[0][0][2].event_ms // HOUR_MS, current.opened_at_s)
            for record, ack in kept:
                remainder.records.append(record)
                remainder.acks.append(ack)
            self._files[partition] = remainder
