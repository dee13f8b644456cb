"""`kill -USR1 <worker pid>` logs each stage's partitions and positions and the stack of every
asyncio task: what a stuck worker is waiting for."""

from __future__ import annotations

import asyncio
import io
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def _await_chain(coro: Any) -> list[str]:
    """The frames a coroutine is suspended in, outermost first (task.print_stack stops at one)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None) or getattr(coro, "ag_frame", None)
        if frame is not None:
            frames.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None) or getattr(coro, "ag_await", None)
    return frames


def _pipeline_state(app: Any) -> str:
    pipeline = app.pipeline
    lines = []
    for runner in (pipeline.ingest_runner, pipeline.export_runner):
        lines.append(f"{runner.stage.name}: assigned={runner.assigned} open={sorted(runner.processors)} "
                     f"rebalancing={runner.rebalancing} positions={runner.positions} lag={runner.lag()}")
    lines.append(f"watermarks: {pipeline.board.marks} low={pipeline.board.low()}")
    return "\n".join(lines) + "\n"


def _dump_tasks(app: Any) -> None:
    out = io.StringIO()
    try:
        out.write(_pipeline_state(app))
    except Exception as exc:  # noqa: BLE001 - diagnostics must not raise
        out.write(f"pipeline state unavailable: {exc!r}\n")
    tasks = asyncio.all_tasks()
    for task in sorted(tasks, key=lambda t: t.get_name()):
        out.write(f"--- {task.get_name()}\n")
        for line in _await_chain(task.get_coro()):
            out.write(f"    {line}\n")
    log.warning("%d asyncio tasks:\n%s", len(tasks), out.getvalue())


def register(app: Any) -> None:
    async def install_handler() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks, app)

    app.task(install_handler)
