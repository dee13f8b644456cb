"""Stage 2 in-process (agents/export.py), with an in-memory broker, store, lake and Redis: a clean
run over partials and frontiers of two input partitions, then the same input with the stage crashed
at every changelog write and at every export, restored from what the broker held. Every window is
exported with the same rows in every run, and never with other rows in between."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents import export
from agents.export import PERSIST_INTERVAL_MS, TICK_INTERVAL_S, ExportContext, ExportPartition
from formats.partials import FrontierMessage, PartialKey, decode_stage_message, encode_frontier
from formats.state import POSITION_KEY, TOTALS_PACK_PREFIX, decode_export_position, pack_key
from kafka_io.topics import topics_for
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import load
from tables.state import decode_export_state
from testing.fakes import CrashError, FakeBroker, FakeClock, FakeOutputs, FakeStore, partials_messages, per_key_messages

SETTINGS = load({"TOPIC_PARTITIONS": "2", "WINDOWS": "tumbling_1m:60s"})
TOPICS = topics_for(SETTINGS)
Q = 0
BASE_MS = 1_793_574_000_000
SIZE_MS = 60_000


Encode = Callable[[int, list[tuple[PartialKey, list[float]]]], list[bytes]]


def _messages(seed: int, encode: Encode = partials_messages, types: tuple[str, ...] = ("click", "view")) -> list[bytes]:
    """What stage 1 of input partitions 0 and 1 sends: cumulative partials with rising markers, a few
    changed keys to a flush, and frontiers; no partial of a window after its partition's frontier
    has passed it."""
    rng = random.Random(seed)
    messages: list[bytes] = []
    changed: dict[int, dict[PartialKey, list[float]]] = {0: {}, 1: {}}

    def flush(p: int) -> None:
        messages.extend(encode(p, list(changed[p].items())))
        changed[p] = {}

    now = {0: BASE_MS, 1: BASE_MS}
    partials: dict[int, dict[PartialKey, list[float]]] = {0: {}, 1: {}}
    frontiers: dict[int, int] = {}
    for offset in range(400):
        p = rng.choice((0, 1))
        now[p] += rng.randint(0, 8_000)
        low = min(now.values()) - 20_000
        event_ms = max(now[p] - rng.randint(0, 15_000), frontiers.get(p, -10**15) + 1)
        start = event_ms - event_ms % SIZE_MS
        key = PartialKey("tumbling_1m", start, rng.choice(types))
        value = rng.randrange(-20, 20) / 4
        partial = partials[p].get(key)
        if partial is None:
            partial = partials[p][key] = [0, 0.0, value, value, 0]
        partial[0] += 1
        partial[1] += value
        partial[2], partial[3], partial[4] = min(partial[2], value), max(partial[3], value), offset
        changed[p][key] = list(partial)
        if rng.random() < 0.4:
            flush(p)
        if rng.random() < 0.15 and low > frontiers.get(p, low - 1):
            flush(p)
            frontiers[p] = low
            messages.append(encode_frontier(FrontierMessage(p, low, 2, BASE_MS)))
    for p in (0, 1):  # the sentinels' frontiers: every window closes
        flush(p)
        messages.append(encode_frontier(FrontierMessage(p, BASE_MS + 10 * 3_600_000, 2, BASE_MS)))
    return messages


@dataclass
class Run:
    broker: FakeBroker
    outputs: FakeOutputs
    crashes: int = 0
    steps: int = 0  # batches, ticks and turns of a background export job that _drive took
    writing: list[int] = field(default_factory=list)  # the steps taken while an export job wrote to the changelog


class _RevokedError(Exception):
    """The partition is revoked (_drive's revoke_at)."""


class RecordingOutputs(FakeOutputs):
    """Remembers every version of every exported object."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__(fail_at=fail_at)
        self.versions: dict[tuple[str, int, int], list[list[Any]]] = {}

    async def export_window(self, window: str, start_ms: int, part: int, rows: list[Any]) -> str:
        key = await super().export_window(window, start_ms, part, rows)
        self.versions.setdefault((window, start_ms, part), []).append(list(rows))
        return key


def _open(run: Run, clock: FakeClock) -> ExportPartition:
    ctx = ExportContext(SETTINGS, TOPICS, run.broker, run.outputs, PipelineStats(), PipelineMetrics(),  # type: ignore[arg-type]
                        Path("/nonexistent"), clock)
    store = FakeStore(run.broker, TOPICS.export_state, Q)
    return ExportPartition(ctx, Q, store, decode_export_state(store.restore()))  # type: ignore[arg-type]


async def _drive(run: Run, messages: list[bytes], seed: int, revoke_at: int | None = None) -> ExportPartition:
    """Feed the input from where the stage says it resumes, crash-restoring whenever a write fails;
    the partition's last owner. With `revoke_at`, revoked once at that step (run.steps: a batch, a tick,
    or a turn of an export job in the background): closed as the runner closes a partition between two
    units of work (gracefully; an export job under way is abandoned), then reopened by its next owner."""
    rng = random.Random(seed)
    clock = FakeClock()
    records = [SimpleNamespace(offset=i, value=m) for i, m in enumerate(messages)]
    part = _open(run, clock)

    def step() -> None:
        run.steps += 1
        if not part.accepting() and getattr(run.broker, "uncommitted", 0):  # _TransactionalBroker's
            run.writing.append(run.steps)
        if run.steps == revoke_at:
            raise _RevokedError

    while True:
        try:
            index = part.start_offset() or 0
            while True:
                await part.tick(clock())
                step()
                while not part.accepting():  # an export in the background: the runner pauses the partition
                    await asyncio.sleep(0)
                    step()
                    await part.tick(clock())
                if index >= len(records):
                    return part
                batch = records[index:index + rng.randint(1, 12)]
                await part.process(batch)
                index += len(batch)
                clock.now_ms += 500
                step()
        except CrashError:
            run.crashes += 1
            await part.close(graceful=False)
            run.broker.fail_at = run.outputs.fail_at = None
            part = _open(run, clock)
        except _RevokedError:
            await part.close(graceful=True)
            part = _open(run, clock)


def _assert_books_match_the_changelog(run: Run, part: ExportPartition) -> None:
    """What a new owner would restore is the state in memory, and the packs stored are exactly the
    ones holding a newest value (none left behind: the changelog stays bounded by the open keys)."""
    items = FakeStore(run.broker, TOPICS.export_state, Q).restore()
    assert decode_export_state(items).totals() == part.state.totals()
    stored = {key for key in items if key.startswith(TOTALS_PACK_PREFIX)}
    assert stored == {pack_key(TOTALS_PACK_PREFIX, seq) for seq in part.state.books.live}


MESSAGES = _messages(4)
CLEAN = Run(FakeBroker(), RecordingOutputs())
_assert_books_match_the_changelog(CLEAN, asyncio.run(_drive(CLEAN, MESSAGES, seed=1)))
# Many long event types, with packs cut at a small limit: an instance's totals are written in
# several packs, and a crash can fall between any two of them.
CUT_BYTES = 2_000
CUT_MESSAGES = _messages(5, types=tuple(f"{i:02d}/" + "x" * 100 for i in range(30)))


def _cut_clean() -> Run:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "PACK_BYTES", CUT_BYTES)
        run = Run(FakeBroker(), RecordingOutputs())
        asyncio.run(_drive(run, CUT_MESSAGES, seed=1))
        return run


CUT_CLEAN = _cut_clean()


def test_the_clean_run_exports_every_window_once() -> None:
    assert len(CLEAN.outputs.lake.aggregates) >= 10
    assert all(len(versions) == 1 for versions in CLEAN.outputs.versions.values())  # type: ignore[attr-defined]
    assert CLEAN.outputs.exports == len(CLEAN.outputs.lake.aggregates)
    assert max(len(orjson.loads(m).get("t", ())) for m in MESSAGES) > 1  # messages of several keys


def test_an_earlier_versions_messages_export_the_same_windows() -> None:
    run = Run(FakeBroker(), RecordingOutputs())
    asyncio.run(_drive(run, _messages(4, per_key_messages), seed=1))
    _assert_same_as_clean(run)


def _assert_same_as_clean(run: Run) -> None:
    assert run.outputs.lake.aggregates == CLEAN.outputs.lake.aggregates
    assert run.outputs.redis == CLEAN.outputs.redis
    for key, versions in run.outputs.versions.items():  # type: ignore[attr-defined]
        assert all(rows == CLEAN.outputs.lake.aggregates[key] for rows in versions), f"{key} exported short"


@pytest.mark.parametrize("crash_at", range(1, CLEAN.broker.sends + 1))
def test_a_crash_at_any_changelog_write_exports_the_same_windows(crash_at: int) -> None:
    run = Run(FakeBroker(fail_at=crash_at), RecordingOutputs())
    part = asyncio.run(_drive(run, MESSAGES, seed=1))
    assert run.crashes == 1
    _assert_same_as_clean(run)
    _assert_books_match_the_changelog(run, part)


def test_the_cut_run_writes_window_instances_in_several_packs() -> None:
    packs = [orjson.loads(r.value) for r in CUT_CLEAN.broker.log(TOPICS.export_state, Q)
             if r.value is not None and r.key is not None and r.key.startswith(TOTALS_PACK_PREFIX)]
    assert max(len(raw) for raw in map(orjson.dumps, packs)) <= CUT_BYTES
    types_of: dict[tuple[str, int], set[str]] = {}
    for body in packs:
        types_of.setdefault((body["w"], body["s"]), set()).update(body["t"])
    assert max(len(body["t"]) for body in packs) < max(map(len, types_of.values()))


@pytest.mark.parametrize("crash_at", range(1, CUT_CLEAN.broker.sends + 1))
def test_a_crash_between_the_packs_of_a_cut_write_exports_the_same_windows(
        crash_at: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "PACK_BYTES", CUT_BYTES)
    run = Run(FakeBroker(fail_at=crash_at), RecordingOutputs())
    part = asyncio.run(_drive(run, CUT_MESSAGES, seed=1))
    assert run.crashes == 1
    assert run.outputs.lake.aggregates == CUT_CLEAN.outputs.lake.aggregates
    assert run.outputs.redis == CUT_CLEAN.outputs.redis
    _assert_books_match_the_changelog(run, part)


@pytest.mark.parametrize("crash_at", range(1, CLEAN.outputs.exports + 1))
def test_a_crash_at_any_export_exports_the_same_windows(crash_at: int) -> None:
    run = Run(FakeBroker(), RecordingOutputs(fail_at=crash_at))
    asyncio.run(_drive(run, MESSAGES, seed=crash_at))
    assert run.crashes == 1
    _assert_same_as_clean(run)


def _stored_positions(broker: FakeBroker) -> list[int]:
    return [decode_export_position(sent.value) for sent in broker.log(TOPICS.export_state, Q)
            if sent.key == POSITION_KEY and sent.value is not None]


def test_the_input_is_stored_every_persist_interval_not_at_every_tick() -> None:
    """With many event types a key gets partials at every stage-1 flush: its totals are written once
    per PERSIST_INTERVAL_MS, and a wall clock that goes back writes at once instead of waiting."""
    run, clock = Run(FakeBroker(), RecordingOutputs()), FakeClock()
    part = _open(run, clock)
    key = PartialKey("tumbling_1m", BASE_MS, "click")
    tick_ms = int(TICK_INTERVAL_S * 1000)

    async def feed(offset: int) -> None:  # one partial of an open window, then a tick
        [message] = partials_messages(0, [(key, [offset + 1, float(offset), 0.0, float(offset), offset])])
        await part.process([SimpleNamespace(offset=offset, value=message)])  # type: ignore[list-item]
        clock.now_ms += tick_ms
        await part.tick(clock())

    async def scenario() -> None:
        ticks_per_interval = PERSIST_INTERVAL_MS // tick_ms
        for offset in range(ticks_per_interval - 1):
            await feed(offset)
        assert _stored_positions(run.broker) == []  # every tick changed the key; none wrote it yet
        await feed(ticks_per_interval - 1)
        assert _stored_positions(run.broker) == [ticks_per_interval]
        clock.now_ms -= 3_600_000  # the wall clock jumps back an hour
        await feed(ticks_per_interval)
        assert _stored_positions(run.broker)[-1] == ticks_per_interval + 1

    asyncio.run(scenario())
    restored = decode_export_state(FakeStore(run.broker, TOPICS.export_state, Q).restore())
    assert restored.totals()[key] == {0: [11, 10.0, 0.0, 10.0, 10]}  # the newest partial, as merged


class _TransactionalBroker(FakeBroker):
    """The fake broker as a transactional writer: counts what was sent since the last commit. A send takes
    a turn of the event loop, as a real one may (waiting for room in the producer's buffer)."""

    transactional = True
    uncommitted = 0

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        await asyncio.sleep(0)
        self.uncommitted += 1
        return await super().send(*args, **kwargs)

    async def commit(self) -> None:
        self.uncommitted = 0


class _SlowOutputs(RecordingOutputs):
    """Each export takes turns of the event loop, and notes how many sends were uncommitted as it ends."""

    def __init__(self, broker: _TransactionalBroker) -> None:
        super().__init__()
        self.broker = broker
        self.open_at_write: list[int] = []

    async def export_window(self, window: str, start_ms: int, part: int, rows: list[Any]) -> str:
        # Each write longer than the one before: the job, entering its windows in the ledger in order, then
        # waits for each write with the ledger entries of the windows before it behind it.
        for _ in range(20 * (len(self.open_at_write) + 1)):
            await asyncio.sleep(0)
        self.open_at_write.append(self.broker.uncommitted)  # while the job waits for it
        return await super().export_window(window, start_ms, part, rows)


def test_no_transaction_stays_open_while_a_window_is_written() -> None:
    """With transactions (kafka_io.clients.TransactionalWriter) an export job commits before each S3 and
    Redis write it may wait for: a write that waits out an outage must not hold a transaction open past
    the broker's timeout. A backlog's job writes windows side by side and enters each in the ledger in
    order, so the ledger entries of the first windows are committed before the job waits for the next."""
    # A backlog: every partial first, then the frontiers that close every window, so one job exports them all.
    frontiers = [m for m in MESSAGES if isinstance(decode_stage_message(m), FrontierMessage)]
    backlog = [m for m in MESSAGES if m not in frontiers] + frontiers[-2:]  # the sentinels' two
    broker = _TransactionalBroker()
    run = Run(broker, _SlowOutputs(broker))
    asyncio.run(_drive(run, backlog, seed=1))
    _assert_same_as_clean(run)
    assert len(run.outputs.open_at_write) >= 10 and set(run.outputs.open_at_write) == {0}  # type: ignore[attr-defined]


def _revocation_steps() -> list[int]:
    """Every step with an export job writing to the changelog, and every tenth step."""
    broker = _TransactionalBroker()
    run = Run(broker, _SlowOutputs(broker))
    asyncio.run(_drive(run, MESSAGES, 1))
    return sorted(set(run.writing) | set(range(1, run.steps + 1, 10)))


@pytest.mark.parametrize("revoke_at", _revocation_steps())
def test_a_revocation_at_any_step_exports_the_same_windows(revoke_at: int) -> None:
    """Closed gracefully between two units of work, the partition writes what it read; with an export job
    under way (its writes and sends take turns of the event loop here), the job is cancelled in the middle,
    and the close writes nothing of its half-changed state (agents/runner.py, revocation)."""
    broker = _TransactionalBroker()
    run = Run(broker, _SlowOutputs(broker))
    part = asyncio.run(_drive(run, MESSAGES, 1, revoke_at))
    assert run.crashes == 0
    _assert_same_as_clean(run)
    _assert_books_match_the_changelog(run, part)


@pytest.mark.parametrize("limit", [1, 2, 3, 7])
def test_open_rows_page_by_start_then_type(limit: int) -> None:
    """The open rows a page at a time, each from the previous one's last (start, type), are the whole list,
    and a type's rows are its only ones."""
    run = Run(FakeBroker(), RecordingOutputs())
    part = asyncio.run(_drive(run, CUT_MESSAGES[:len(CUT_MESSAGES) // 2], seed=1))
    everything = part.rows("tumbling_1m", None)
    assert len({r.window_start_ms for r in everything}) > 1 and len(everything) > 3 * limit
    assert everything == sorted(everything, key=lambda r: (r.window_start_ms, r.event_type))
    pages, after = [], None
    while True:
        page = part.rows("tumbling_1m", None, after, limit)
        assert len(page) <= limit
        if not page:
            break
        pages += page
        after = (page[-1].window_start_ms, page[-1].event_type)
    assert pages == everything
    one = everything[0].event_type
    assert part.rows("tumbling_1m", one, None, limit) == [r for r in everything if r.event_type == one][:limit]
