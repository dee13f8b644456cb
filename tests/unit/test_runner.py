"""The stage runner's revocation (agents/runner.py) in-process, with a fake consumer and processors:
the loop stops between two units of work and the processors close gracefully; a unit of work that
does not end within UNIT_WAIT_S is cancelled, and its processors close without writing (their state
in memory is half changed)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from aiokafka import TopicPartition

from agents import runner as runner_module
from agents.runner import StageRunner

TOPIC = "events"


class Processor:
    """Holds its first batch until `release` is set (None: forever); remembers how it was closed."""

    def __init__(self, release: asyncio.Event | None) -> None:
        self.release = release
        self.in_batch = asyncio.Event()
        self.batches_done = 0
        self.ticks = 0
        self.closed: bool | None = None  # graceful or not

    def start_offset(self) -> int | None:
        return 0

    def committable_offset(self) -> int | None:
        return None

    def accepting(self) -> bool:
        return True

    async def process(self, records: Sequence[Any]) -> None:
        self.in_batch.set()
        await (self.release.wait() if self.release is not None else asyncio.Event().wait())
        self.batches_done += 1

    async def tick(self, now_ms: int) -> None:
        self.ticks += 1

    async def close(self, *, graceful: bool) -> None:
        self.closed = graceful


class Stage:
    name = "ingest"
    topic = TOPIC
    tick_interval_s = 0.0

    def __init__(self, processor: Processor) -> None:
        self.processor = processor

    async def open(self, partitions: Sequence[int], reader: Any) -> dict[int, Processor]:
        return {0: self.processor}


class Consumer:
    """One batch of partition 0, then nothing."""

    def __init__(self, batches: int) -> None:
        self.batches = batches

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int = 0,
                      max_records: int | None = None) -> dict[TopicPartition, list[Any]]:
        if self.batches:
            self.batches -= 1
            return {TopicPartition(TOPIC, 0): [type("Record", (), {"offset": 0})()]}
        await asyncio.sleep(timeout_ms / 1000)
        return {}

    def seek(self, tp: TopicPartition, offset: int) -> None:
        return None

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        return None

    def resume(self, *tps: TopicPartition) -> None:
        return None

    def pause(self, *tps: TopicPartition) -> None:
        return None

    def paused(self) -> set[TopicPartition]:
        return set()

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None


class Producer:
    async def flush(self) -> None:
        return None


def _crash(exc: BaseException) -> None:
    raise AssertionError(f"the runner crashed: {exc!r}")


async def _revoked_in_a_batch(processor: Processor, release_after_s: float | None, batches: int = 1) -> StageRunner:
    """Start the loop on partition 0, revoke while its batch runs (released after `release_after_s`)."""
    runner = StageRunner(Stage(processor), group_id="g", client_options={}, producer=Producer(),  # type: ignore[arg-type]
                         url="http://127.0.0.1:1", partitions=1, on_crash=_crash)
    runner._consumer = Consumer(batches)  # type: ignore[assignment]
    runner._reader = object()  # type: ignore[assignment]
    runner._to_open = [0]
    runner._start_loop()
    if batches:
        await asyncio.wait_for(processor.in_batch.wait(), 5)
    else:
        await asyncio.sleep(0.3)  # the loop polls for records
    if release_after_s is not None and processor.release is not None:
        release = processor.release
        asyncio.get_running_loop().call_later(release_after_s, release.set)
    await runner._revoke()
    return runner


def test_a_revocation_waits_for_the_batch_under_way_then_closes_gracefully() -> None:
    async def scenario() -> Processor:
        processor = Processor(asyncio.Event())
        await _revoked_in_a_batch(processor, release_after_s=0.2)
        return processor

    processor = asyncio.run(scenario())
    assert processor.batches_done == 1
    assert processor.ticks == 0, "no tick after the revocation: the loop stopped at the end of the batch"
    assert processor.closed is True


def test_a_batch_that_does_not_end_in_time_is_cancelled_and_its_processors_close_without_writing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner_module, "UNIT_WAIT_S", 0.2)

    async def scenario() -> Processor:
        processor = Processor(None)
        await _revoked_in_a_batch(processor, release_after_s=None)
        return processor

    processor = asyncio.run(scenario())
    assert processor.batches_done == 0
    assert processor.closed is False


def test_a_revocation_while_the_loop_waits_for_records_closes_gracefully() -> None:
    async def scenario() -> Processor:
        processor = Processor(asyncio.Event())
        await _revoked_in_a_batch(processor, release_after_s=None, batches=0)
        return processor

    processor = asyncio.run(scenario())
    assert processor.ticks > 0, "the loop ran"
    assert processor.closed is True
