"""A measured fix for faust-streaming 0.15.3's per-message overhead (pinned in requirements.txt).

faust's fetch loop (`Consumer._drain_messages`) hands every message to the conductor with
`await self.wait_first(callback(message), self.suspend_flow.wait())`. mode's `wait_first`
wraps each argument and the service's stop/crash events in new asyncio Tasks, waits for the
first and cancels the rest: four Tasks per message, the largest cost in the worker's main
thread (py-spy), which capped a no-op agent near 17,000 events/s on this machine.

The callback (put the message on a stream's queue) almost never blocks. This copy of the
loop (two changes, marked) steps it synchronously first; only if it does block (a full stream buffer, flow
suspended for a rebalance) is the already started coroutine handed to `wait_first`, so
suspension, stop and crash abort it exactly as before. Offsets, acks, commits and
rebalances are unchanged. With a larger stream buffer (see app.py) a no-op agent reads
about 38,000 events/s here.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import AsyncIterator, Coroutine, Generator
from typing import Any, cast

from faust.sensors.monitor import Monitor
from faust.transport import consumer as faust_consumer
from mode import Service

_UPSTREAM_VERSION = "0.15.3"


@types.coroutine
def _drive(coro: Coroutine[Any, Any, Any], yielded: Any) -> Generator[Any, Any, Any]:
    """Go on running `coro`, which already yielded `yielded`, as `await coro` would."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # CancelledError from wait_first included
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _resume(coro: Coroutine[Any, Any, Any], yielded: Any) -> Any:
    return await _drive(coro, yielded)


def expected_offset(read_offset: int | None, last_processed: int | None, committed: int | None) -> int:
    """The offset a partition's next message should have, from faust's bookkeeping.

    faust's read offset is the last message handed on, except right after a seek, when it
    is the seek's target (None for 0). Before a partition's first message it is where
    faust sought it to: the committed offset, or nothing (0) for a new group.
    """
    if last_processed is not None and read_offset == last_processed:
        return last_processed + 1
    if read_offset is not None:
        return read_offset
    return committed or 0


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - faust's loop, one change
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    yield_every = 100
    num_since_yield = 0
    gap_rereads: dict[Any, int] = {}  # tp -> first missing offset already re-read once
    last_processed: dict[Any, int] = {}  # tp -> offset of the last message handed on
    committed = self._committed_offset.__getitem__
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(faust_consumer.CONSUMER_FETCHING)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                rereading: set[Any] = set()  # partitions sought back during this fetch
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await asyncio.sleep(0)
                        num_since_yield = 0
                    if tp in rereading:
                        continue  # fetched again after the seek
                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        # The second change: faust acks a gap as if compacted away, but records
                        # it dropped itself (a fetch cut short by a rebalance, or discarded
                        # while flow was stopped) leave gaps too, also before a partition's
                        # first message, where faust does not look; acking those commits them
                        # unprocessed. Re-read a gap once; only a gap that comes back is real
                        # (compaction, transaction markers) and acked as faust does.
                        last = last_processed.get(tp)
                        if last is not None and r_offset == last:
                            expected = last + 1  # the steady state, inlined: this runs per message
                        else:
                            expected = expected_offset(r_offset, last, committed(tp))
                        if offset > expected and acks_enabled_for(message.topic):
                            if gap_rereads.get(tp) != expected:
                                gap_rereads[tp] = expected
                                self.log.warning("offsets %d..%d of %r were skipped; re-reading them",
                                                 expected, offset - 1, tp)
                                await self.seek(tp, expected)
                                rereading.add(tp)
                                continue
                            await self._add_gap(tp, expected, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        # The change: step the callback here; wait_first only if it blocks.
                        if suspend_flow.is_set():
                            await self.wait_first(callback(message), suspend_flow.wait())
                        else:
                            coro = callback(message)
                            try:
                                yielded = coro.send(None)
                            except StopIteration:
                                pass
                            else:
                                await self.wait_first(_resume(coro, yielded), suspend_flow.wait())
                        set_read_offset(tp, offset)
                        last_processed[tp] = offset
                unset_flag(faust_consumer.CONSUMER_FETCHING)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(faust_consumer.CONSUMER_FETCHING)


def install() -> None:
    """Replace faust's fetch loop; refuses a faust version it was not written against."""
    import faust

    if faust.__version__ != _UPSTREAM_VERSION:
        raise RuntimeError(f"faust_patches targets faust-streaming {_UPSTREAM_VERSION}, found {faust.__version__}")
    faust_consumer.Consumer._drain_messages = _drain_messages


class LeanMonitor(Monitor):
    """faust's Monitor without its per-message bookkeeping.

    The default Monitor updates several dictionaries per message and per stream event
    (a WeakKeyDictionary lookup among them: 9% of the worker's samples in py-spy). The
    pipeline keeps its own counters (agents/stats.py), so those hooks do nothing here;
    table, commit and send sensors are faust's own.
    """

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None


def skip_per_event_sensors(app: Any) -> None:
    """Stop faust calling sensors for every message and stream event.

    Even with LeanMonitor, faust's SensorDelegate builds a dict per stream event (11% of
    the worker's samples in py-spy). The pipeline counts per batch instead (agents/stats.py).
    Must run before the streams start, since they bind these methods when created.
    """
    sensors = app.sensors
    sensors.on_message_in = _ignore
    sensors.on_stream_event_in = _ignore
    sensors.on_stream_event_out = _ignore
    sensors.on_message_out = _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
