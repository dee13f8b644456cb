"""The raw archive buffer (agents/archive.py): roll rules, exact acks, replays of existing files."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable

import pytest

from agents.archive import HOUR_MS, Archiver
from events import Event
from sinks.lake import ArchiveOutcome
from tables.partials import Record

H0 = 472_222 * HOUR_MS  # 2023-11-14T22:00:00Z, the start of an hour


class FakeAck:
    def __init__(self, partition: int, offset: int) -> None:
        self.partition = partition
        self.offset = offset
        self.calls = 0

    def ack(self) -> None:
        self.calls += 1


class FakePut:
    """put_archive: records each call; answers scripted outcomes, else 'written up to the last record'."""

    def __init__(self, script: Iterable[tuple[bool, int]] = ()) -> None:
        self.calls: list[tuple[int, int, list[tuple[int, int, Event]]]] = []
        self.script = list(script)

    async def __call__(self, partition: int, start_offset: int,
                       records: list[tuple[int, int, Event]]) -> ArchiveOutcome:
        self.calls.append((partition, start_offset, list(records)))
        if self.script:
            written, end_offset = self.script.pop(0)
        else:
            written, end_offset = True, records[-1][1]
        return ArchiveOutcome(key=f"part-{partition}-{start_offset}", end_offset=end_offset, written=written)

    def offsets(self) -> list[tuple[int, int, list[int]]]:
        return [(p, start, [offset for _, offset, _ in records]) for p, start, records in self.calls]


class Harness:
    def __init__(self, max_records: int = 100, max_age_s: float = 60.0,
                 script: Iterable[tuple[bool, int]] = ()) -> None:
        self.put = FakePut(script)
        self.archiver = Archiver(put_archive=self.put, max_records=max_records, max_age_s=max_age_s)
        self.acks: dict[tuple[int, int], FakeAck] = {}

    def add(self, partition: int, offset: int, event_ms: int = H0, now_s: float = 0.0) -> None:
        ack = self.acks[(partition, offset)] = FakeAck(partition, offset)
        event = _event(event_ms, offset)
        asyncio.run(self.archiver.add(Record(partition, offset, b"raw"), event, ack, now_s))

    def dead(self, partition: int, offset: int, now_s: float = 0.0) -> None:
        """A dead letter: not archived, only its ack passes through."""
        ack = self.acks[(partition, offset)] = FakeAck(partition, offset)
        asyncio.run(self.archiver.add_batch([(partition, offset, None, ack)], now_s))

    def acked(self, partition: int | None = None) -> list[int]:
        """Offsets acked exactly once (fails on any double ack)."""
        assert all(ack.calls <= 1 for ack in self.acks.values()), "acked twice"
        return sorted(o for (p, o), ack in self.acks.items() if ack.calls == 1 and partition in (None, p))

    def roll_all(self) -> None:
        asyncio.run(self.archiver.roll_all())

    def roll_aged(self, now_s: float) -> None:
        asyncio.run(self.archiver.roll_aged(now_s))


def _event(event_ms: int, offset: int) -> Event:
    return Event(user_id=f"u{offset}", event_type="t", event_ms=event_ms, value=float(offset))


# -- size ---------------------------------------------------------------------------------


def test_files_hold_at_most_max_records() -> None:
    h = Harness(max_records=3)
    for offset in range(7):
        h.add(0, offset)
    # The records of the first full file are archived and acked once a fourth one arrives at the latest.
    assert h.put.offsets() == [(0, 0, [0, 1, 2]), (0, 3, [3, 4, 5])]
    assert h.acked() == [0, 1, 2, 3, 4, 5]
    assert h.archiver.buffered() == 1
    h.roll_all()
    assert h.put.offsets() == [(0, 0, [0, 1, 2]), (0, 3, [3, 4, 5]), (0, 6, [6])]
    assert h.acked() == list(range(7))
    assert h.archiver.files_written == 3
    assert h.archiver.buffered() == 0


def test_put_archive_receives_partition_offset_event_tuples() -> None:
    h = Harness()
    h.add(4, 10, H0 + 5)
    h.add(4, 12, H0 + 1)  # offset gap; event time may go backwards within the hour
    h.roll_all()
    assert h.put.calls == [(4, 10, [(4, 10, _event(H0 + 5, 10)), (4, 12, _event(H0 + 1, 12))])]


def test_file_is_rolled_as_soon_as_it_reaches_max_records() -> None:
    h = Harness(max_records=3)
    for offset in range(3):
        h.add(0, offset)
    assert h.put.offsets() == [(0, 0, [0, 1, 2])]
    assert h.acked() == [0, 1, 2]


# -- hour ---------------------------------------------------------------------------------


def test_event_hour_change_rolls_the_file() -> None:
    h = Harness()
    h.add(0, 0, H0)
    h.add(0, 1, H0 + HOUR_MS - 1)
    assert h.put.calls == []
    h.add(0, 2, H0 + HOUR_MS)  # next hour
    assert h.put.offsets() == [(0, 0, [0, 1])]
    assert h.acked() == [0, 1]
    h.add(0, 3, H0 + HOUR_MS + 5)
    h.add(0, 4, H0 + 10)  # a late event of the previous hour: another file
    assert h.put.offsets() == [(0, 0, [0, 1]), (0, 2, [2, 3])]
    h.roll_all()
    assert h.put.offsets() == [(0, 0, [0, 1]), (0, 2, [2, 3]), (0, 4, [4])]
    for _, _, records in h.put.calls:
        assert len({event.event_ms // HOUR_MS for _, _, event in records}) == 1
    assert h.acked() == [0, 1, 2, 3, 4]


def test_hours_are_utc_floor_before_the_epoch() -> None:
    h = Harness()
    h.add(0, 0, -1)
    h.add(0, 1, -HOUR_MS)  # same hour [-1h, 0)
    h.add(0, 2, 0)
    h.roll_all()
    assert h.put.offsets() == [(0, 0, [0, 1]), (0, 2, [2])]


# -- age ----------------------------------------------------------------------------------


def test_roll_aged_rolls_files_at_max_age_of_their_first_record() -> None:
    h = Harness(max_age_s=60.0)
    h.add(0, 0, now_s=100.0)
    h.add(0, 1, now_s=150.0)
    h.add(1, 0, now_s=130.0)
    h.roll_aged(159.999)
    assert h.put.calls == []
    h.roll_aged(160.0)  # partition 0's file opened at 100.0
    assert h.put.offsets() == [(0, 0, [0, 1])]
    assert h.acked(0) == [0, 1] and h.acked(1) == []
    h.add(0, 2, now_s=170.0)  # a new file, opened now
    h.roll_aged(189.999)
    assert h.put.offsets() == [(0, 0, [0, 1])]
    h.roll_aged(190.0)  # partition 1's file opened at 130.0
    assert h.put.offsets() == [(0, 0, [0, 1]), (1, 0, [0])]
    h.roll_aged(229.999)
    assert h.put.offsets() == [(0, 0, [0, 1]), (1, 0, [0])]
    h.roll_aged(230.0)
    assert h.put.offsets() == [(0, 0, [0, 1]), (1, 0, [0]), (0, 2, [2])]
    assert h.acked(0) == [0, 1, 2] and h.acked(1) == [0]
    h.roll_aged(10_000.0)
    assert len(h.put.calls) == 3


def test_roll_all_rolls_every_partition_and_nothing_when_empty() -> None:
    h = Harness()
    h.roll_all()
    assert h.put.calls == []
    h.add(2, 7)
    h.add(0, 3)
    h.add(2, 8)
    h.roll_all()
    assert sorted(h.put.offsets()) == [(0, 3, [3]), (2, 7, [7, 8])]
    assert h.acked(0) == [3] and h.acked(2) == [7, 8]
    h.roll_all()
    assert len(h.put.calls) == 2


def test_partitions_have_separate_files_and_limits() -> None:
    h = Harness(max_records=2)
    for offset in range(3):
        h.add(0, offset)
        h.add(1, 100 + offset)
    assert h.put.offsets() == [(0, 0, [0, 1]), (1, 100, [100, 101])]
    assert h.archiver.buffered() == 2
    h.roll_all()
    assert sorted(h.put.offsets()) == [(0, 0, [0, 1]), (0, 2, [2]), (1, 100, [100, 101]), (1, 102, [102])]


# -- outcomes of existing files -----------------------------------------------------------


def test_existing_file_with_fewer_records_leaves_the_rest_buffered() -> None:
    h = Harness(script=[(False, 12)])
    for offset in range(10, 16):
        h.add(0, offset)
    asyncio.run(h.archiver.roll_aged(60.0))  # one roll: the existing file covers 10..12
    assert h.put.offsets() == [(0, 10, [10, 11, 12, 13, 14, 15])]
    assert h.acked() == [10, 11, 12]  # its whole range came by: released at once
    assert h.archiver.files_written == 0
    assert h.archiver.buffered() == 3
    h.roll_all()
    assert h.put.offsets() == [(0, 10, [10, 11, 12, 13, 14, 15]), (0, 13, [13, 14, 15])]
    assert h.acked() == [10, 11, 12, 13, 14, 15]
    assert h.archiver.files_written == 1


def test_remainder_of_a_size_roll_continues_as_the_next_file() -> None:
    h = Harness(max_records=4, script=[(False, 1)])
    for offset in range(5):
        h.add(0, offset)
    # The first file (0..3) already existed up to offset 1: 2 and 3 open the next file, with 4.
    assert h.put.offsets() == [(0, 0, [0, 1, 2, 3])]
    assert h.acked() == [0, 1]
    assert h.archiver.buffered() == 3
    h.add(0, 5)
    h.add(0, 6)
    assert h.put.offsets() == [(0, 0, [0, 1, 2, 3]), (0, 2, [2, 3, 4, 5])]
    assert h.acked() == [0, 1, 2, 3, 4, 5]


def test_remainder_is_still_rolled_by_age() -> None:
    h = Harness(max_age_s=60.0, script=[(False, 11)])
    h.add(0, 10, now_s=0.0)
    h.add(0, 11, now_s=5.0)
    h.add(0, 12, now_s=20.0)
    h.roll_aged(60.0)
    assert h.put.offsets() == [(0, 10, [10, 11, 12])]
    assert h.acked() == [10, 11]
    # Offset 12 was added at 20.0: at 80.0 it is max_age old, so its file must be rolled by then.
    h.roll_aged(80.0)
    assert h.put.offsets() == [(0, 10, [10, 11, 12]), (0, 12, [12])]
    assert h.acked() == [10, 11, 12]


def test_existing_file_with_more_records_acks_them_without_rewriting() -> None:
    h = Harness(script=[(False, 20)])
    for offset in (10, 11, 12):
        h.add(0, offset)
    h.roll_all()
    # Held, not acked: a commit inside the existing file would make a restart name its
    # first file by an offset no file starts at, and archive the rest of it twice.
    assert h.acked() == []
    assert h.archiver.buffered() == 0
    assert h.archiver.files_written == 0
    for offset in range(13, 20):  # the rest of the replay, already in the existing file
        h.add(0, offset)
    assert h.acked() == []
    h.add(0, 20)  # the existing file's last record: its whole range is released together
    assert h.acked() == list(range(10, 21))
    assert h.archiver.buffered() == 0
    h.add(0, 21)
    h.roll_all()
    assert h.put.offsets() == [(0, 10, [10, 11, 12]), (0, 21, [21])]
    assert h.acked() == list(range(10, 22))
    assert h.archiver.files_written == 1


def test_records_at_or_below_archived_offset_are_acked_on_add() -> None:
    h = Harness()
    h.add(0, 5)
    h.add(0, 6)
    h.roll_all()
    h.add(0, 3)  # redeliveries of archived records: held until the file's last record
    assert h.acks[(0, 3)].calls == 0
    h.add(0, 6)
    assert h.acks[(0, 6)].calls == 1 and h.acks[(0, 3)].calls == 1
    assert h.archiver.buffered() == 0
    h.add(1, 6)  # another partition has archived nothing
    assert h.acks[(1, 6)].calls == 0
    assert h.archiver.buffered() == 1
    assert h.put.offsets() == [(0, 5, [5, 6])]


def test_record_that_triggers_a_roll_into_a_longer_existing_file_is_not_rearchived() -> None:
    # A previous run (larger ARCHIVE_MAX_RECORDS) wrote offsets 0..9 in the file starting at 0.
    h = Harness(max_records=3, script=[(False, 9)])
    for offset in range(4):  # the 3rd record fills the file 0..2, which finds the existing one
        h.add(0, offset)
    assert h.put.offsets() == [(0, 0, [0, 1, 2])]
    assert h.acked() == []  # held until offset 9, the existing file's last record
    assert h.archiver.buffered() == 0
    for offset in range(4, 11):
        h.add(0, offset)
    assert h.acked() == list(range(10))
    h.roll_all()
    assert h.put.offsets() == [(0, 0, [0, 1, 2]), (0, 10, [10])]


def test_remainder_of_an_hour_roll_is_not_mixed_with_the_next_hour() -> None:
    h = Harness(script=[(False, 1)])
    for offset in range(3):
        h.add(0, offset, H0 + offset)
    h.add(0, 3, H0 + HOUR_MS)  # rolls 0..2; the existing file held 0..1
    h.roll_all()
    for _, _, records in h.put.calls:
        assert len({event.event_ms // HOUR_MS for _, _, event in records}) == 1
    assert h.put.offsets() == [(0, 0, [0, 1, 2]), (0, 2, [2]), (0, 3, [3])]


# -- forget -------------------------------------------------------------------------------


def test_forget_drops_the_buffer_without_acking() -> None:
    h = Harness()
    h.add(0, 1)
    h.add(0, 2)
    h.roll_all()
    h.add(0, 3)
    h.add(1, 9)
    h.archiver.forget(0)
    assert h.archiver.buffered() == 1
    h.roll_all()
    assert h.put.offsets() == [(0, 1, [1, 2]), (1, 9, [9])]
    assert h.acked(0) == [1, 2]  # 3 is never acked: the partition's new owner replays it
    h.archiver.forget(5)  # unknown partition: nothing happens


def test_forget_clears_the_archived_offset() -> None:
    h = Harness()
    h.add(0, 1)
    h.roll_all()
    h.archiver.forget(0)
    # Reassigned later: its archived offset is learned again from S3, not assumed.
    h.add(0, 1)
    assert h.acks[(0, 1)].calls == 0
    assert h.archiver.buffered() == 1
    h.roll_all()
    assert h.put.offsets() == [(0, 1, [1]), (0, 1, [1])]


# -- model: a crashed run's files, a replay from the committed offset ---------------------


class FakeLake:
    """Conditional puts into S3: a file is named by (partition, start offset), never overwritten."""

    def __init__(self) -> None:
        self.files: dict[tuple[int, int], list[tuple[int, int, Event]]] = {}
        self.skipped: list[tuple[int, int, int, int]] = []  # (partition, start, records offered, end_offset)

    async def __call__(self, partition: int, start_offset: int,
                       records: list[tuple[int, int, Event]]) -> ArchiveOutcome:
        existing = self.files.get((partition, start_offset))
        if existing is not None:
            self.skipped.append((partition, start_offset, len(records), existing[-1][1]))
            return ArchiveOutcome(f"{partition}-{start_offset}", existing[-1][1], written=False)
        self.files[(partition, start_offset)] = list(records)
        return ArchiveOutcome(f"{partition}-{start_offset}", records[-1][1], written=True)


def _stream(rng: random.Random, n: int) -> list[tuple[Record, Event]]:
    """Two partitions interleaved, offsets with gaps, event time rising across hour boundaries."""
    stream = []
    offsets = {0: rng.randint(0, 9), 1: rng.randint(0, 9)}
    event_ms = {0: H0 + rng.randint(0, HOUR_MS), 1: H0 + rng.randint(0, HOUR_MS)}
    for _ in range(n):
        p = rng.randint(0, 1)
        event_ms[p] += rng.randint(0, 90_000)
        stream.append((Record(p, offsets[p], b"raw"), _event(event_ms[p], offsets[p])))
        offsets[p] += rng.choice((1, 1, 2))
    return stream


async def _run(lake: FakeLake, stream: list[tuple[Record, Event]], start: dict[int, int], stop: int | None,
               rng: random.Random, max_records: int) -> tuple[dict[tuple[int, int], FakeAck], list[dict[int, int]]]:
    """One worker run from the committed offsets; stop=None runs to the end and flushes.

    Returns the acks of the records it was fed and the offsets faust could have committed
    after each step (per partition: one past the contiguous prefix of acked records).
    """
    archiver = Archiver(put_archive=lake, max_records=max_records, max_age_s=30.0)
    acks: dict[tuple[int, int], FakeAck] = {}
    fed: dict[int, list[int]] = {0: [], 1: []}
    committed = dict(start)
    cursor = {0: 0, 1: 0}
    history = [dict(committed)]

    def advance() -> None:
        for p in fed:
            while cursor[p] < len(fed[p]) and acks[(p, fed[p][cursor[p]])].calls:
                committed[p] = fed[p][cursor[p]] + 1
                cursor[p] += 1
        history.append(dict(committed))

    now_s = 0.0
    for index, (record, event) in enumerate(stream):
        if stop is not None and index >= stop:
            break
        if record.offset < start[record.partition]:
            continue
        now_s += rng.choice((0.0, 0.5, 3.0, 9.0))
        ack = acks[(record.partition, record.offset)] = FakeAck(record.partition, record.offset)
        fed[record.partition].append(record.offset)
        await archiver.add(record, event, ack, now_s)
        if rng.random() < 0.15:
            await archiver.roll_aged(now_s)
        advance()
    if stop is None:
        await archiver.roll_all()
        advance()
    return acks, history


@pytest.mark.parametrize("seed", range(1, 13))
def test_replay_after_a_crash_archives_every_record_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    stream = _stream(rng, 240)
    lake = FakeLake()
    max_records = rng.randint(3, 10)
    # A run crashes after some records, having archived files it had not all committed yet.
    _, history = asyncio.run(_run(lake, stream, {0: 0, 1: 0}, rng.randint(60, len(stream)), rng, max_records))
    committed = rng.choice(history[: len(history) // 2])
    # The next run replays from the committed offsets, cutting files at other times (age rolls differ).
    acks, _ = asyncio.run(_run(lake, stream, committed, None, rng, max_records))

    assert lake.skipped  # the replay did meet files of the crashed run
    assert [key for key, ack in acks.items() if ack.calls != 1] == []
    archived = [(p, offset) for records in lake.files.values() for p, offset, _ in records]
    assert sorted(archived) == sorted((r.partition, r.offset) for r, _ in stream)  # none lost, none twice
    expected = {(r.partition, r.offset): e for r, e in stream}
    for (p, start), records in lake.files.items():
        assert records[0][:2] == (p, start)
        assert all(event == expected[(rp, offset)] and rp == p for rp, offset, event in records)
        assert len(records) <= max_records
        assert len({event.event_ms // HOUR_MS for _, _, event in records}) == 1


def test_commit_never_lands_inside_an_existing_file() -> None:
    lake = FakeLake()
    # Run 1 archived offsets 10..20 in the file starting at 10, then crashed before committing.
    lake.files[(0, 10)] = [(0, offset, _event(H0, offset)) for offset in range(10, 21)]

    async def run2() -> dict[int, FakeAck]:
        # Run 2 replays from 10 and rolls early by age: the file at 10 exists up to 20.
        archiver = Archiver(put_archive=lake, max_records=100, max_age_s=30.0)
        acks = {offset: FakeAck(0, offset) for offset in range(10, 14)}
        await archiver.add(Record(0, 10, b"raw"), _event(H0, 10), acks[10], 0.0)
        await archiver.add(Record(0, 11, b"raw"), _event(H0, 11), acks[11], 1.0)
        await archiver.roll_aged(30.0)
        await archiver.add(Record(0, 12, b"raw"), _event(H0, 12), acks[12], 31.0)
        await archiver.add(Record(0, 13, b"raw"), _event(H0, 13), acks[13], 32.0)
        return acks

    acks = asyncio.run(run2())
    # Nothing acked: faust cannot commit inside 10..20, so a crash now restarts at 10 again.
    assert [acks[offset].calls for offset in range(10, 14)] == [0, 0, 0, 0]

    async def run3() -> None:
        archiver = Archiver(put_archive=lake, max_records=100, max_age_s=30.0)
        for offset in range(10, 26):
            await archiver.add(Record(0, offset, b"raw"), _event(H0, offset), FakeAck(0, offset), 0.0)
        await archiver.roll_all()

    asyncio.run(run3())
    archived = sorted(offset for records in lake.files.values() for _, offset, _ in records)
    assert archived == list(range(10, 26))


def test_redelivered_records_are_not_buffered_twice_but_acked_with_the_file() -> None:
    h = Harness()
    first = [FakeAck(0, offset) for offset in range(3)]
    again = [FakeAck(0, offset) for offset in (1, 2)]

    async def deliver() -> None:
        items = [(0, ack.offset, _event(H0, ack.offset), ack) for ack in first + again]
        await h.archiver.add_batch(items, 0.0)
        await h.archiver.roll_all()

    asyncio.run(deliver())
    assert h.put.offsets() == [(0, 0, [0, 1, 2])]
    assert [ack.calls for ack in first + again] == [1, 1, 1, 1, 1]


# -- dead letters: acks in offset order ---------------------------------------------------


def test_a_dead_letter_is_acked_at_once_when_nothing_before_it_waits() -> None:
    h = Harness()
    h.dead(0, 0)
    assert h.acked() == [0]
    assert h.put.calls == []


def test_a_dead_letter_waits_for_the_file_of_the_rows_before_it() -> None:
    # faust commits the first run of consecutive acks wherever it starts: acking offset 2
    # before 0 and 1 are archived would let a rebalance commit past them.
    h = Harness()
    h.add(0, 0)
    h.add(0, 1)
    h.dead(0, 2)
    h.add(0, 3)
    assert h.acked() == []
    h.roll_all()
    assert h.put.offsets() == [(0, 0, [0, 1, 3])]
    assert h.acked() == [0, 1, 2, 3]


def test_dead_letters_after_the_last_row_are_acked_with_its_file() -> None:
    h = Harness()
    h.add(0, 0)
    h.dead(0, 1)
    h.dead(0, 2)
    assert h.acked() == []
    h.roll_aged(now_s=120.0)
    assert h.acked() == [0, 1, 2]
    h.dead(0, 3)  # nothing buffered any more
    assert h.acked() == [0, 1, 2, 3]


def test_dead_letters_wait_for_an_existing_files_rows_to_come_by() -> None:
    # A replay: the crashed run's file holds offsets 0..5; the replay buffers 0..2 and meets it.
    h = Harness(max_records=3, script=[(False, 5)])
    for offset in (0, 1, 2):
        h.add(0, offset)  # the third fills the file: it exists up to 5, so 0..2 are held, not acked
    h.dead(0, 3)
    h.add(0, 4)
    assert h.acked() == []
    h.dead(0, 5)  # the existing file's last offset has come by: everything up to it is released
    assert h.acked() == [0, 1, 2, 3, 4, 5]


def test_dead_letters_past_a_shorter_existing_file_move_to_the_next_file() -> None:
    h = Harness(script=[(False, 1)])
    for offset in (0, 1, 2):
        h.add(0, offset)
    h.dead(0, 3)
    h.add(0, 4)
    h.roll_all()  # the first file exists up to 1; 2, 4 go to a new file with 3's ack
    assert h.put.offsets() == [(0, 0, [0, 1, 2, 4]), (0, 2, [2, 4])]
    assert h.acked() == [0, 1, 2, 3, 4]


def test_dead_letters_of_other_partitions_do_not_wait() -> None:
    h = Harness()
    h.add(0, 0)
    h.dead(1, 0)
    assert h.acked(1) == [0]
    assert h.acked(0) == []
