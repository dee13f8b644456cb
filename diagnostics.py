"""`kill -USR1 <worker pid>` logs the consumer's flow state and the stack of every asyncio task:
what a stuck worker is waiting for."""

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


def _consumer_state(app: Any) -> str:
    consumer = app.consumer

    def names(tps: Any) -> list[str]:
        return sorted(f"{tp.topic}[{tp.partition}]" for tp in (tps or ()))

    return (f"flow_active={consumer.flow_active} assigned={names(consumer.assignment())}\n"
            f"active={names(consumer._active_partitions)}\npaused={names(consumer._paused_partitions)}\n"
            f"buffered={names(consumer._buffered_partitions)}\n"
            f"queues={[(t.get_topic_name(), t.queue.qsize()) for t in app.topics._topics]}\n"
            f"{_aiokafka_state(consumer)}")


def _aiokafka_state(consumer: Any) -> str:
    """Positions and fetch state of the aiokafka consumer behind faust (read racily: diagnostics only)."""
    try:
        client = consumer._thread._consumer
        assignment = client._subscription.subscription.assignment
        lines = []
        for tp in sorted(assignment.tps, key=lambda t: (t.topic, t.partition)):
            state = assignment.state_value(tp)
            lines.append(f"  {tp.topic}[{tp.partition}] position={state._position} paused={state.paused} "
                         f"reset={state._reset_strategy} has_valid={state.has_valid_position}")
        fetcher = client._fetcher
        lines.append(f"  fetcher records={list(fetcher._records)} in_flight={getattr(fetcher, '_in_flight', None)}")
        return "aiokafka:\n" + "\n".join(lines) + "\n"
    except Exception as exc:  # noqa: BLE001 - diagnostics must not raise
        return f"aiokafka state unavailable: {exc!r}\n"


def _dump_tasks(app: Any) -> None:
    out = io.StringIO()
    try:
        out.write(_consumer_state(app))
    except Exception as exc:  # noqa: BLE001 - diagnostics must not raise
        out.write(f"consumer state unavailable: {exc!r}\n")
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
