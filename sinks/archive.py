"""The raw archive of one input partition: a batching policy over the lake's writer.

Valid events are buffered in offset order and cut into files by size (`max_records`),
by age (`max_age_s`) and at every change of event-time hour (a file lives in one hour's
folder). Sealed files are written in order by one background task, so ingest never
waits for S3; while S3 is slow the buffer grows, and the ingest stage pauses the
partition once `buffered()` reaches its limit.

Files are named by partition and first offset and written only if absent (sinks.lake).
If a file already exists, an earlier owner wrote it and did not get to record it: its
end offset (object metadata) says which records it holds, and those are not written
again; the rest start the next file, named by its first record. Stage 1 resumes at the
first record of its earliest unwritten file (`first_unarchived`), which is where that
earlier owner's next file started too, so files of two owners never overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from bisect import bisect_right
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from formats.events import Event, EventColumns
from formats.lake import HOUR_MS
from formats.raw import RawColumns

log = logging.getLogger(__name__)

# A file's rows: the article's events (EventColumns) or a spec's (RawColumns, the original records).
Columns = EventColumns | RawColumns
# (partition, start_offset, the file's rows) -> sinks.lake.ArchiveOutcome.
PutArchive = Callable[[int, int, Columns], Awaitable[Any]]


@dataclass(slots=True)
class _File:
    hour: int
    opened_at_s: float
    records: Columns  # built as records are added, so the writer encodes them as they are


class PartitionArchive:
    def __init__(self, partition: int, *, put_archive: PutArchive, max_records: int, max_age_s: float,
                 columns: Callable[[int], Columns] = EventColumns) -> None:
        self.partition = partition
        self._columns = columns  # the kind of rows: EventColumns, or RawColumns for a spec's events
        self._put = put_archive
        self.max_records = max_records
        self.max_age_s = max_age_s
        self._open: _File | None = None
        self._sealed: deque[_File] = deque()
        self._next_offset = -1  # records below it were added already (a re-read adds nothing twice)
        self._covered = -1  # every record up to this offset is in a file in S3
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while no sealed file waits (or the writer failed)
        self._drained.set()
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self.files_written = 0

    # -- buffering (called by the ingest stage) -----------------------------------------------

    def add(self, offset: int, event: Event, now_s: float) -> None:
        if offset < self._next_offset or offset <= self._covered:
            return
        self._next_offset = offset + 1
        current = self._file_for(event.event_ms // HOUR_MS, now_s)
        current.records.append(offset, event)  # type: ignore[call-arg]
        if len(current.records) >= self.max_records:
            self._seal()

    def add_columns(self, events: Columns, now_s: float) -> None:
        """add() for each of a batch's valid events (in offset order), by slices of its columns."""
        offsets, event_ms = events.offsets, events.event_ms
        start = bisect_right(offsets, max(self._next_offset - 1, self._covered))  # a re-read adds nothing twice
        end = len(offsets)
        if start >= end:
            return
        self._next_offset = offsets[-1] + 1
        if min(event_ms) // HOUR_MS == max(event_ms) // HOUR_MS:  # the common batch: one hour
            runs = [(start, end)]
        else:
            hours = [ms // HOUR_MS for ms in event_ms]
            cuts = [i for i in range(start + 1, end) if hours[i] != hours[i - 1]]
            runs = list(zip([start, *cuts], [*cuts, end], strict=True))
        for run_start, run_end in runs:
            hour = event_ms[run_start] // HOUR_MS
            while run_start < run_end:
                current = self._file_for(hour, now_s)
                stop = min(run_end, run_start + self.max_records - len(current.records))
                current.records.extend(events, run_start, stop)  # type: ignore[arg-type]
                run_start = stop
                if len(current.records) >= self.max_records:
                    self._seal()

    def _file_for(self, hour: int, now_s: float) -> _File:
        """The open file, sealed first if it holds another hour."""
        current = self._open
        if current is not None and current.hour != hour:
            self._seal()
            current = None
        if current is None:
            current = self._open = _File(hour, now_s, self._columns(self.partition))
        return current

    def roll_aged(self, now_s: float) -> None:
        if self._open is not None and now_s - self._open.opened_at_s >= self.max_age_s:
            self._seal()

    def buffered(self) -> int:
        """Records not yet in S3 (open file and sealed files waiting for their write)."""
        return sum(len(f.records) for f in self._sealed) + (len(self._open.records) if self._open else 0)

    def first_unarchived(self) -> int | None:
        """Offset of the first buffered record, None when nothing is buffered."""
        if self._sealed:
            return self._sealed[0].records.offsets[0]
        if self._open is not None:
            return self._open.records.offsets[0]
        return None

    def raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    async def flush(self, timeout_s: float) -> bool:
        """Seal the open file and wait up to timeout_s for every file to be written; True if all were."""
        self._seal()
        return await self.settle(timeout_s)

    async def settle(self, timeout_s: float) -> bool:
        """Wait up to timeout_s until every sealed file is written; True if none is left."""
        if self._sealed and self._error is None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout_s)
        return not self._sealed

    async def close(self) -> None:
        """Stop writing: a write in flight is abandoned (the next owner writes that file again, or finds it)."""
        writer, self._writer = self._writer, None
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    # -- writing -------------------------------------------------------------------------

    def _seal(self) -> None:
        current, self._open = self._open, None
        if current is None or not current.records:
            return
        self._sealed.append(current)
        self._drained.clear()
        if self._writer is None:
            self._writer = asyncio.ensure_future(self._write_all())
        self._wake.set()

    async def _write_all(self) -> None:
        try:
            while True:
                while not self._sealed:
                    self._drained.set()
                    self._wake.clear()
                    await self._wake.wait()
                file = self._sealed[0]
                records = file.records
                outcome = await self._put(self.partition, records.offsets[0], records)
                if outcome.written:
                    self.files_written += 1
                else:
                    log.info("raw file %s already held offsets up to %d: not written again", outcome.key,
                             outcome.end_offset)
                self._covered = max(self._covered, outcome.end_offset)
                self._drop_covered()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - surfaced to the stage, which stops the worker
            self._error = exc
            self._drained.set()

    def _drop_covered(self) -> None:
        """Remove what S3 now holds from the head of the queue (and from the open file)."""
        covered = self._covered
        while self._sealed:
            head = self._sealed[0]
            keep = bisect_right(head.records.offsets, covered)
            if keep < len(head.records):
                head.records = head.records.tail(keep)  # an existing, shorter file: the rest is the next file
                return
            self._sealed.popleft()
        if self._open is not None:
            keep = bisect_right(self._open.records.offsets, covered)
            if keep < len(self._open.records):
                self._open.records = self._open.records.tail(keep)
            else:
                self._open = None
