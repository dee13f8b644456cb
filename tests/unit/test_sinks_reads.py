"""The web's reads (sinks/outputs.py call_once): on their own threads, never behind the window writes, and
refused at once (ReadsBusyError) beyond READ_THREADS running and MAX_WAITING_READS waiting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import load
from sinks.outputs import MAX_WAITING_READS, READ_THREADS, Outputs, ReadsBusyError

DEADLINE_S = 10.0  # for a read to start once its thread is free


@pytest.fixture
def outputs() -> Outputs:
    settings = load({})
    result = Outputs(settings, PipelineStats(), PipelineMetrics())
    result._ensure_open = lambda: None  # type: ignore[method-assign]  # the reads below touch no store
    return result


def test_reads_wait_for_their_own_threads_and_the_excess_is_refused(outputs: Outputs) -> None:
    release = threading.Event()
    started: list[str] = []

    def read(name: str) -> str:
        started.append(threading.current_thread().name)
        assert release.wait(DEADLINE_S), "never released"
        return name

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        writes_thread = await loop.run_in_executor(None, threading.current_thread)  # the writes' executor
        held = [asyncio.create_task(outputs.call_once("redis", "read", read, f"r{i}"))
                for i in range(READ_THREADS + MAX_WAITING_READS)]
        await asyncio.sleep(0)  # every task has entered call_once
        with pytest.raises(ReadsBusyError, match=f"{READ_THREADS + MAX_WAITING_READS} reads in progress or waiting"):
            await outputs.call_once("redis", "read", read, "one too many")
        # A write is not held up by the reads that fill their threads.
        assert await asyncio.wait_for(loop.run_in_executor(None, lambda: "written"), DEADLINE_S) == "written"
        release.set()
        assert await asyncio.wait_for(asyncio.gather(*held), DEADLINE_S) == [f"r{i}" for i in range(len(held))]
        assert {name.rsplit("_", 1)[0] for name in started} == {"reads"}
        assert writes_thread.name not in started
        assert await outputs.call_once("redis", "read", read, "after") == "after"  # the count went back down

    asyncio.run(scenario())
    outputs.close()
