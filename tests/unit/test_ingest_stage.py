"""Stage 1 in-process (agents/ingest.py), with an in-memory broker, store, lake and a fake clock:
a clean run, then the same input with the stage crashed at every single send of the run (dead
letters, late records, partials, changelog writes, watermarks, frontiers) and restored from what
the broker held, as a new owner would. Every crash run ends with the clean run's outputs."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents import ingest
from agents.ingest import IngestContext, IngestPartition
from aggregations.spec import parse_spec
from formats.events import iso_to_epoch_ms, iso_utc
from formats.partials import decode_stage_message
from formats.side_outputs import source_offset
from formats.state import PARTIALS_PACK_PREFIX, pack_key
from kafka_io.topics import topics_for
from ops.stats import PipelineStats
from settings import Settings, load
from tables.state import decode_ingest_state
from testing.fakes import CrashError, FakeBoard, FakeBroker, FakeClock, FakeOutputs, FakeStore, last_source_offset

SETTINGS = load({"TOPIC_PARTITIONS": "2", "ALLOWED_LATENESS": "10s", "IDLE_TIMEOUT": "1h",
                 "ARCHIVE_MAX_RECORDS": "7", "ARCHIVE_MAX_AGE": "3s"})
TOPICS = topics_for(SETTINGS)
P = 1
ROOT = Path(__file__).resolve().parents[2]
BASE_MS = 1_793_574_000_000  # a minute boundary
TYPES = ("click", "view", "a/b")


def _records(seed: int, n: int, types: tuple[str, ...] = TYPES, late_after: int = 60) -> list[Any]:
    """Partition P's input: events 1 s apart with disorder, malformed ones, and late ones (at BASE_MS,
    from offset `late_after` on)."""
    rng = random.Random(seed)
    records = []
    for offset in range(n):
        event_ms = BASE_MS + offset * 1_000 - rng.choice((0, 0, 2_000, 7_000))
        if offset % 11 == 5:
            value = b"{not json"
        elif offset % 17 == 9 and offset > late_after:
            value = orjson.dumps({"user_id": "u", "event_type": "click", "timestamp": BASE_MS, "value": 1.0})  # late
        else:
            value = orjson.dumps({"user_id": f"u{offset % 5}", "event_type": rng.choice(types),
                                  "timestamp": event_ms, "value": rng.randrange(-40, 40) / 4})
        records.append(SimpleNamespace(offset=offset, value=value, timestamp=-1, key=b"k", headers=[("h", b"v")]))
    return records


def _event_ms(record: Any) -> int | None:
    """The event time of a record of either input (None: a malformed one)."""
    if not record.value.startswith(b'{"'):
        return None
    body = orjson.loads(record.value)
    return body["timestamp"] if "timestamp" in body else iso_to_epoch_ms(body["time"])


def _low_before(records: list[Any], index: int) -> int | None:
    """The board's low watermark once records[:index] are in: their highest event time - 15 s."""
    times = [t for r in records[:index] if (t := _event_ms(r)) is not None]
    return max(times) - 15_000 if times else None


@dataclass
class Run:
    broker: FakeBroker
    outputs: FakeOutputs
    crashes: int = 0
    steps: int = 0  # batches and ticks _drive took


class _RevokedError(Exception):
    """The partition is revoked (_drive's revoke_at)."""


def _open(run: Run, board: FakeBoard, clock: FakeClock, settings: Settings = SETTINGS) -> IngestPartition:
    """A new owner: the partition's state, and its dead-letter and late positions, from the broker."""
    ctx = IngestContext(settings, TOPICS, run.broker, run.outputs, board, PipelineStats(),  # type: ignore[arg-type]
                        Path("/nonexistent"), clock, monotonic=clock.monotonic)
    store = FakeStore(run.broker, TOPICS.ingest_state, P)
    position, partials = decode_ingest_state(store.restore(), P)
    return IngestPartition(ctx, P, store, position, partials,  # type: ignore[arg-type]
                           last_source_offset(run.broker, TOPICS.dead_letters, P),
                           last_source_offset(run.broker, TOPICS.late, P))


async def _drive(run: Run, records: list[Any], batch_seed: int, settings: Settings = SETTINGS,
                 revoke_at: int | None = None) -> IngestPartition:
    """Feed the input from where the stage says it resumes, crash-restoring whenever a send fails;
    the partition's last owner. With `revoke_at`, revoked once after that batch or tick (run.steps): closed
    as the runner closes a partition between two units of work (gracefully: it writes its partials, raw
    files and position), then reopened by its next owner."""
    board, clock = FakeBoard(), FakeClock()
    rng = random.Random(batch_seed)
    part = _open(run, board, clock, settings)

    def step() -> None:
        run.steps += 1
        if run.steps == revoke_at:
            raise _RevokedError

    while True:
        try:
            index = part.start_offset() or 0
            while index < len(records):
                board.low_ms = _low_before(records, index)
                await part.tick(clock())
                step()
                batch = records[index:index + rng.randint(1, 9)]
                await part.process(batch)
                await part.archive.settle(1)
                clock.now_ms += 700
                index += len(batch)
                step()
            board.low_ms = _low_before(records, len(records))
            await part.tick(clock())
            assert await part.archive.flush(1)
            await part.tick(clock())
            return part
        except CrashError:
            run.crashes += 1
            await part.archive.close()  # the process is gone, its writes in flight with it
            run.broker.fail_at = None
            part = _open(run, board, clock, settings)
        except _RevokedError:
            await part.close(graceful=True)
            part = _open(run, board, clock, settings)


def _outputs(run: Run) -> dict[str, Any]:
    broker = run.broker
    newest: dict[Any, list[float]] = {}
    frontier = None
    for q in range(2):
        for record in broker.log(TOPICS.partials, q):
            message = decode_stage_message(record.value)  # type: ignore[arg-type]
            if hasattr(message, "entries"):
                for key, partial in message.entries:
                    current = newest.get(key)
                    if current is None or partial[-1] > current[-1]:
                        newest[key] = partial
            else:
                frontier = max(frontier or message.frontier_ms, message.frontier_ms)
    def once(topic: str) -> list[tuple[int | None, bytes | None]]:
        return [(source_offset(r.headers), r.value) for r in broker.log(topic, P)]
    archived = sorted(offset for offsets in run.outputs.lake.files.values() for offset in offsets)
    return {"partials": newest, "frontier": frontier, "dead": once(TOPICS.dead_letters), "late": once(TOPICS.late),
            "archive": archived}


def _assert_books_match_the_changelog(run: Run, part: IngestPartition) -> None:
    """What a new owner would restore is the state in memory, and the packs stored are exactly the
    ones holding a newest value (none left behind: the changelog stays bounded by the open keys)."""
    items = FakeStore(run.broker, TOPICS.ingest_state, P).restore()
    assert decode_ingest_state(items, P)[1].values == part.partials.values
    stored = {key for key in items if key.startswith(PARTIALS_PACK_PREFIX)}
    assert stored == {pack_key(PARTIALS_PACK_PREFIX, seq) for seq in part.partials.books.live}
    assert sum(part.partials.books.live.values()) == len(part.partials)


def _clean(records: list[Any], settings: Settings = SETTINGS) -> tuple[dict[str, Any], Run]:
    run = Run(FakeBroker(), FakeOutputs())
    _assert_books_match_the_changelog(run, asyncio.run(_drive(run, records, batch_seed=1, settings=settings)))
    return _outputs(run), run


RECORDS = _records(3, 140)
CLEAN, CLEAN_RUN = _clean(RECORDS)
CLEAN_SENDS = CLEAN_RUN.broker.sends
# Many long event types, with messages and packs cut at a small limit: a flush writes several
# packs per window instance, and a crash can fall between any two of them.
CUT_BYTES = 1_500
LONG_TYPES = tuple(f"{i:02d}/" + "x" * 200 for i in range(40))


@pytest.fixture
def small_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "PARTIALS_BYTES", CUT_BYTES)


def _cut_clean() -> tuple[list[Any], dict[str, Any], Run]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ingest, "PARTIALS_BYTES", CUT_BYTES)
        # Its late records are late for every window: one late for some windows only is judged by the
        # frontier its batch began with, and batches after a crash begin elsewhere.
        records = _records(4, 140, LONG_TYPES, late_after=80)
        return records, *_clean(records)


CUT_RECORDS, CUT_CLEAN, CUT_RUN = _cut_clean()
CUT_SENDS = CUT_RUN.broker.sends


def test_the_clean_run_has_every_kind_of_output() -> None:
    assert CLEAN["dead"] and CLEAN["late"] and CLEAN["partials"] and CLEAN["frontier"] is not None
    valid = [r.offset for r in RECORDS if r.value.startswith(b'{"')]
    assert CLEAN["archive"] == valid
    assert [offset for offset, _ in CLEAN["dead"]] == [r.offset for r in RECORDS if r.value == b"{not json"]


@pytest.mark.parametrize("crash_at", range(1, CLEAN_SENDS + 1))
def test_a_crash_at_any_send_ends_with_the_clean_outputs(crash_at: int) -> None:
    run = Run(FakeBroker(fail_at=crash_at), FakeOutputs())
    part = asyncio.run(_drive(run, RECORDS, batch_seed=1))  # the clean run's batches up to the crash, then others
    assert run.crashes == 1
    assert _outputs(run) == CLEAN
    _assert_books_match_the_changelog(run, part)


@pytest.mark.parametrize("revoke_at", range(1, CLEAN_RUN.steps + 1))
def test_a_revocation_between_any_two_units_of_work_ends_with_the_clean_outputs(revoke_at: int) -> None:
    run = Run(FakeBroker(), FakeOutputs())
    part = asyncio.run(_drive(run, RECORDS, batch_seed=1, revoke_at=revoke_at))
    assert run.crashes == 0
    assert _outputs(run) == CLEAN
    _assert_books_match_the_changelog(run, part)


def test_the_cut_run_cuts_its_messages_and_packs() -> None:
    broker = CUT_RUN.broker
    sizes = [len(r.value) for q in range(2) for r in broker.log(TOPICS.partials, q) if r.value is not None]
    assert CUT_CLEAN["partials"] and max(sizes) <= CUT_BYTES
    packs = [orjson.loads(r.value) for r in broker.log(TOPICS.ingest_state, P)
             if r.value is not None and r.key is not None and r.key.startswith(PARTIALS_PACK_PREFIX)]
    types_of: dict[tuple[str, int], set[str]] = defaultdict(set)
    for body in packs:
        types_of[(body["w"], body["s"])].update(body["t"])
    # More event types in a window instance than a pack holds: instances were cut into several packs.
    assert max(len(body["t"]) for body in packs) < max(map(len, types_of.values()))


@pytest.mark.parametrize("crash_at", range(1, CUT_SENDS + 1))
@pytest.mark.usefixtures("small_messages")
def test_a_crash_between_the_packs_of_a_cut_flush_ends_with_the_clean_outputs(crash_at: int) -> None:
    run = Run(FakeBroker(fail_at=crash_at), FakeOutputs())
    part = asyncio.run(_drive(run, CUT_RECORDS, batch_seed=1))
    assert run.crashes == 1
    assert _outputs(run) == CUT_CLEAN
    _assert_books_match_the_changelog(run, part)


@pytest.mark.parametrize("seed", range(40))
def test_repeated_crashes_end_with_the_clean_outputs(seed: int) -> None:
    rng = random.Random(seed)
    run = Run(FakeBroker(), FakeOutputs())

    async def crash_often() -> IngestPartition:
        # Arm a new crash point after every restore, a few times.
        original = run.broker.send

        async def send(*args: Any, **kwargs: Any) -> Any:
            if run.crashes < 4 and rng.random() < 0.02:
                raise CrashError("random crash")
            return await original(*args, **kwargs)

        run.broker.send = send  # type: ignore[method-assign]
        return await _drive(run, RECORDS, batch_seed=seed)

    part = asyncio.run(crash_often())
    assert run.crashes >= 1
    assert _outputs(run) == CLEAN
    _assert_books_match_the_changelog(run, part)


# -- a spec's events (deploy/aggregations/iot.toml): the same crash at every send ------------------------

SPEC = parse_spec((ROOT / "deploy" / "aggregations" / "iot.toml").read_text(),
                  [w.name for w in SETTINGS.pipeline.windows])
SPEC_SETTINGS = replace(SETTINGS, pipeline=replace(SETTINGS.pipeline, spec=SPEC))


def _readings(seed: int, n: int) -> list[Any]:
    """IoT readings 1 s apart with disorder: a measure missing now and then, malformed records, readings
    without a device id (a dead letter for one aggregation, counted in the other), and late ones."""
    rng = random.Random(seed)
    records = []
    for offset in range(n):
        event_ms = BASE_MS + offset * 1_000 - rng.choice((0, 0, 2_000, 7_000))
        device: dict[str, str] = {"id": f"d-{offset % 4}", "site": rng.choice(("berlin", "paris"))}
        metrics = {"temp": rng.randrange(-40, 40) / 4, "hum": rng.randrange(0, 400) / 4}
        if offset % 11 == 5:
            value = b"{not json"
        else:
            if offset % 13 == 7:
                del device["id"]
            if offset % 7 == 3:
                del metrics[rng.choice(("temp", "hum"))]
            if offset % 17 == 9 and offset > 60:
                # Late for every window, whatever the batches: a record late for some windows only is
                # judged by the frontier its batch began with, and batches after a crash begin elsewhere.
                event_ms = BASE_MS - 60_000
            value = orjson.dumps({"device": device, "metrics": metrics, "time": iso_utc(event_ms)})
        records.append(SimpleNamespace(offset=offset, value=value, timestamp=-1, key=b"k", headers=[("h", b"v")]))
    return records


READINGS = _readings(5, 100)
SPEC_CLEAN, SPEC_RUN = _clean(READINGS, SPEC_SETTINGS)
SPEC_SENDS = SPEC_RUN.broker.sends


def test_the_clean_run_of_a_spec_has_every_kind_of_output() -> None:
    assert SPEC_CLEAN["dead"] and SPEC_CLEAN["late"] and SPEC_CLEAN["partials"]
    windows = {key.window for key in SPEC_CLEAN["partials"]}
    assert windows == {"devices/tumbling_1m", "devices/hopping_1m", "sites/tumbling_1m", "sites/hopping_1m"}
    assert {len(partial) for key, partial in SPEC_CLEAN["partials"].items() if key.window.startswith("devices/")} == {9}
    assert SPEC_CLEAN["archive"] == [r.offset for r in READINGS if r.value.startswith(b'{"')]


@pytest.mark.parametrize("crash_at", range(1, SPEC_SENDS + 1))
def test_a_crash_at_any_send_of_a_spec_run_ends_with_the_clean_outputs(crash_at: int) -> None:
    run = Run(FakeBroker(fail_at=crash_at), FakeOutputs())
    part = asyncio.run(_drive(run, READINGS, batch_seed=1, settings=SPEC_SETTINGS))
    assert run.crashes == 1
    assert _outputs(run) == SPEC_CLEAN
    _assert_books_match_the_changelog(run, part)


@dataclass
class _TransactionalBroker(FakeBroker):
    """A transactional writer whose commits fail while `fail_commits` is set: a crash before a tick's commit."""

    transactional = True
    fail_commits: bool = False

    async def commit(self) -> None:
        if self.fail_commits:
            raise CrashError("crash at commit")


def test_a_frontier_is_shown_only_once_its_transaction_is_committed() -> None:
    """/v1/status's frontiers_ms told the chaos harness (and an operator) that a frontier was reached before
    the tick's transaction committed it; a crash in between took it back, the harness sent late records,
    and the restarted partition judged them on time against its older frontier (chaos seed 789174)."""
    async def main() -> None:
        broker = _TransactionalBroker()
        run = Run(broker, FakeOutputs())
        board, clock = FakeBoard(), FakeClock()
        part = _open(run, board, clock)
        board.low_ms = clock.now_ms - 60_000
        broker.fail_commits = True
        with pytest.raises(CrashError):
            await part.tick(clock())
        assert part.ctx.stats.frontiers_ms == {}  # announced, not committed: not shown
        part = _open(run, board, clock)
        broker.fail_commits = False
        await part.tick(clock())
        assert part.ctx.stats.frontiers_ms == {P: clock.now_ms - 60_000}

    asyncio.run(main())
