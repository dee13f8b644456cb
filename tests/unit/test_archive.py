"""The raw archive of one partition (sinks/archive.py): roll rules, existing files, and replays
of a crashed owner's files from where its stored position said to resume."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest

from formats.events import Event
from formats.lake import HOUR_MS
from formats.raw import RawColumns, parquet_to_raw, raw_columns_to_parquet
from sinks.archive import PartitionArchive
from sinks.lake import ArchiveOutcome

H0 = 472_222 * HOUR_MS  # 2023-11-14T22:00:00Z, the start of an hour
P = 3


def _event(event_ms: int, offset: int) -> Event:
    return Event(user_id=f"u{offset}", event_type="t", event_ms=event_ms, value=float(offset))


class FakePut:
    """put_archive: records each call; answers scripted outcomes, else 'written up to the last record'."""

    def __init__(self, script: Iterable[tuple[bool, int]] = ()) -> None:
        self.calls: list[tuple[int, int, list[int]]] = []
        self.script = list(script)

    async def __call__(self, partition: int, start_offset: int, records: list[tuple[int, int, Event]]
                       ) -> ArchiveOutcome:
        self.calls.append((partition, start_offset, [offset for _, offset, _ in records]))
        written, end_offset = self.script.pop(0) if self.script else (True, records[-1][1])
        return ArchiveOutcome(key=f"part-{partition}-{start_offset}", end_offset=end_offset, written=written)


def _run(coro_fn):  # type: ignore[no-untyped-def]
    return asyncio.run(coro_fn())


def test_files_hold_at_most_max_records_and_are_written_in_order() -> None:
    async def go() -> tuple[FakePut, PartitionArchive]:
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=3, max_age_s=60)
        for offset in range(7):
            archive.add(offset, _event(H0, offset), 0.0)
        assert archive.first_unarchived() == 0
        assert await archive.settle(5)
        assert archive.buffered() == 1 and archive.first_unarchived() == 6
        assert await archive.flush(5)
        assert archive.first_unarchived() is None and archive.buffered() == 0
        return put, archive

    put, archive = _run(go)
    assert put.calls == [(P, 0, [0, 1, 2]), (P, 3, [3, 4, 5]), (P, 6, [6])]
    assert archive.files_written == 3


def test_an_hour_change_cuts_the_file_and_files_never_span_two_hours() -> None:
    async def go() -> FakePut:
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=100, max_age_s=60)
        for offset, event_ms in enumerate((H0, H0 + HOUR_MS - 1, H0 + HOUR_MS, H0 + HOUR_MS + 5, H0 + 10)):
            archive.add(offset, _event(event_ms, offset), 0.0)
        await archive.flush(5)
        return put

    assert _run(go).calls == [(P, 0, [0, 1]), (P, 2, [2, 3]), (P, 4, [4])]


def test_hours_are_utc_floor_before_the_epoch() -> None:
    async def go() -> FakePut:
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=100, max_age_s=60)
        for offset, event_ms in enumerate((-1, -HOUR_MS, 0)):
            archive.add(offset, _event(event_ms, offset), 0.0)
        await archive.flush(5)
        return put

    assert _run(go).calls == [(P, 0, [0, 1]), (P, 2, [2])]


def test_a_file_rolls_once_its_first_record_is_max_age_old() -> None:
    async def go() -> FakePut:
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=100, max_age_s=60)
        archive.add(0, _event(H0, 0), 100.0)
        archive.add(1, _event(H0, 1), 150.0)
        archive.roll_aged(159.999)
        await archive.settle(5)
        assert put.calls == []
        archive.roll_aged(160.0)
        await archive.settle(5)
        archive.add(2, _event(H0, 2), 170.0)
        archive.roll_aged(229.999)
        await archive.settle(5)
        assert len(put.calls) == 1
        archive.roll_aged(230.0)
        await archive.settle(5)
        return put

    assert _run(go).calls == [(P, 0, [0, 1]), (P, 2, [2])]


def test_records_added_again_are_ignored() -> None:
    async def go() -> FakePut:
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=100, max_age_s=60)
        for offset in (5, 6, 5, 6, 7, 2):
            archive.add(offset, _event(H0, offset), 0.0)
        await archive.flush(5)
        archive.add(7, _event(H0, 7), 0.0)  # already written
        await archive.flush(5)
        return put

    assert _run(go).calls == [(P, 5, [5, 6, 7])]


def test_an_existing_shorter_file_leaves_the_rest_for_the_next_file() -> None:
    async def go() -> tuple[FakePut, PartitionArchive]:
        put = FakePut(script=[(False, 12)])
        archive = PartitionArchive(P, put_archive=put, max_records=100, max_age_s=60)
        for offset in range(10, 16):
            archive.add(offset, _event(H0, offset), 0.0)
        await archive.flush(5)
        return put, archive

    put, archive = _run(go)
    assert put.calls == [(P, 10, [10, 11, 12, 13, 14, 15]), (P, 13, [13, 14, 15])]
    assert archive.files_written == 1


def test_an_existing_longer_file_covers_later_files_and_the_open_one() -> None:
    async def go() -> tuple[FakePut, PartitionArchive]:
        put = FakePut(script=[(False, 20)])
        archive = PartitionArchive(P, put_archive=put, max_records=3, max_age_s=60)
        for offset in range(10, 22):  # files 10..12 (exists up to 20), 13..15, 16..18, then 19..21
            archive.add(offset, _event(H0, offset), 0.0)
        await archive.flush(5)
        return put, archive

    put, archive = _run(go)
    assert put.calls == [(P, 10, [10, 11, 12]), (P, 21, [21])]
    assert archive.first_unarchived() is None


def test_a_failed_write_is_raised_to_the_stage() -> None:
    async def failing(partition: int, start: int, records: list) -> ArchiveOutcome:  # type: ignore[type-arg]
        raise PermissionError("access denied")

    async def go() -> None:
        archive = PartitionArchive(P, put_archive=failing, max_records=1, max_age_s=60)
        archive.add(0, _event(H0, 0), 0.0)
        assert not await archive.settle(5)
        with pytest.raises(PermissionError):
            archive.raise_if_failed()

    _run(go)


def test_close_abandons_a_write_in_flight() -> None:
    started = asyncio.Event()

    async def slow(partition: int, start: int, records: list) -> ArchiveOutcome:  # type: ignore[type-arg]
        started.set()
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    async def go() -> None:
        archive = PartitionArchive(P, put_archive=slow, max_records=1, max_age_s=60)
        archive.add(0, _event(H0, 0), 0.0)
        await started.wait()
        assert not await archive.flush(0.05)
        await archive.close()
        assert archive.first_unarchived() == 0

    _run(go)


# -- model: an owner crashes; the next resumes where the last stored position said ----------


class FakeLake:
    """Conditional puts into S3: a file is named by (partition, start offset), never overwritten."""

    def __init__(self) -> None:
        self.files: dict[int, list[int]] = {}
        self.skipped = 0

    async def __call__(self, partition: int, start_offset: int, records: list[tuple[int, int, Event]]
                       ) -> ArchiveOutcome:
        await asyncio.sleep(0)
        existing = self.files.get(start_offset)
        if existing is not None:
            self.skipped += 1
            return ArchiveOutcome(str(start_offset), existing[-1], written=False)
        self.files[start_offset] = [offset for _, offset, _ in records]
        return ArchiveOutcome(str(start_offset), records[-1][1], written=True)


def _stream(rng: random.Random, n: int) -> list[tuple[int, Event | None]]:
    """Offsets with gaps; None marks a record that is not archived (a dead letter)."""
    stream = []
    offset = rng.randint(0, 9)
    event_ms = H0 + rng.randint(0, HOUR_MS)
    for _ in range(n):
        event_ms += rng.randint(-30_000, 90_000)
        stream.append((offset, None if rng.random() < 0.1 else _event(event_ms, offset)))
        offset += rng.choice((1, 1, 2))
    return stream


async def _owner(lake: FakeLake, stream: list[tuple[int, Event | None]], resume_at: int, stop: int | None,
                 rng: random.Random, max_records: int) -> list[int]:
    """One owner from resume_at; stop=None runs to the end. Returns the positions it stored
    (what `first_unarchived` or the next offset to read was after each step)."""
    archive = PartitionArchive(P, put_archive=lake, max_records=max_records, max_age_s=30.0)
    stored = []
    now_s = 0.0
    for index, (offset, event) in enumerate(stream):
        if stop is not None and index >= stop:
            break
        if offset < resume_at:
            continue
        now_s += rng.choice((0.0, 0.5, 3.0, 9.0))
        if event is not None:
            archive.add(offset, event, now_s)
        if rng.random() < 0.2:
            archive.roll_aged(now_s)
        if rng.random() < 0.3:
            await asyncio.sleep(0)  # let the writer run
        first = archive.first_unarchived()
        stored.append(first if first is not None else offset + 1)
    if stop is None:
        assert await archive.flush(5)
    else:
        await archive.close()  # killed: a write in flight may or may not land
    return stored


@pytest.mark.parametrize("seed", range(1, 25))
def test_resuming_after_a_crash_archives_every_record_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    stream = _stream(rng, 240)
    lake = FakeLake()
    max_records = rng.randint(3, 10)
    resume_at = stream[0][0]
    for _ in range(rng.randint(1, 3)):  # a few owners crash, each leaving files it did not record
        stored = asyncio.run(_owner(lake, stream, resume_at, rng.randint(40, len(stream)), rng, max_records))
        if stored:
            resume_at = max(resume_at, rng.choice(stored[: max(1, len(stored) // 2)]))
    asyncio.run(_owner(lake, stream, resume_at, None, rng, max_records))

    archived = [offset for offsets in lake.files.values() for offset in offsets]
    assert sorted(archived) == [offset for offset, event in stream if event is not None]  # none lost, none twice
    for start, offsets in lake.files.items():
        assert offsets[0] == start and len(offsets) <= max_records
        events = {offset: event for offset, event in stream}
        assert len({events[o].event_ms // HOUR_MS for o in offsets}) == 1  # type: ignore[union-attr]


def test_adding_a_batch_of_columns_cuts_the_same_files_as_adding_each_event() -> None:
    """add_columns (the hot path's) against add per event: hour changes, full files, re-reads."""
    from formats.events import EventColumns

    rng = random.Random(31)

    async def go(by_columns: bool, batches: list[list[tuple[int, Event]]], max_records: int) -> list:  # type: ignore[type-arg]
        put = FakePut()
        archive = PartitionArchive(P, put_archive=put, max_records=max_records, max_age_s=60)
        for batch in batches:
            if by_columns:
                columns = EventColumns(P)
                for offset, event in batch:
                    columns.append(offset, event)
                archive.add_columns(columns, 0.0)
            else:
                for offset, event in batch:
                    archive.add(offset, event, 0.0)
        await archive.flush(5)
        return put.calls

    for _ in range(200):
        offset, batches = 0, []
        for _ in range(rng.randint(1, 6)):
            if rng.random() < 0.3 and offset:
                offset = rng.randrange(offset)  # read again from an earlier offset
            batch = []
            for _ in range(rng.randint(1, 12)):
                batch.append((offset, _event(H0 + rng.choice((0, 1, 1, HOUR_MS, -1)) * rng.randint(1, 9), offset)))
                offset += rng.randint(1, 2)
            batches.append(batch)
        max_records = rng.randint(1, 8)
        per_event = _run(lambda: go(False, batches, max_records))  # noqa: B023 - run at once
        assert _run(lambda: go(True, batches, max_records)) == per_event  # noqa: B023
        assert per_event


def test_a_specs_events_are_archived_as_their_original_records_by_the_same_rules() -> None:
    async def go() -> tuple[FakePut, list[RawColumns]]:
        put, files = FakePut(), []

        async def keep(partition: int, start_offset: int, records: RawColumns) -> ArchiveOutcome:
            files.append(records.tail(0))
            return await put(partition, start_offset, records)  # type: ignore[arg-type]

        archive = PartitionArchive(P, put_archive=keep, max_records=3, max_age_s=60, columns=RawColumns)
        batch = RawColumns(P)
        for offset, event_ms in enumerate((H0, H0 + 1, H0 + HOUR_MS, H0 + HOUR_MS, H0 + HOUR_MS, H0 + HOUR_MS)):
            batch.append(offset, event_ms, b'{"n": %d}' % offset)
        archive.add_columns(batch, 0.0)
        archive.add_columns(batch, 0.0)  # a re-read adds nothing twice
        assert await archive.flush(5)
        return put, files

    put, files = _run(go)
    assert put.calls == [(P, 0, [0, 1]), (P, 2, [2, 3, 4]), (P, 5, [5])]  # cut at the hour and at 3 records
    assert [(f.offsets, f.raws) for f in files][1] == ([2, 3, 4], [b'{"n": 2}', b'{"n": 3}', b'{"n": 4}'])
    assert parquet_to_raw(raw_columns_to_parquet(files[1])).raws == files[1].raws
