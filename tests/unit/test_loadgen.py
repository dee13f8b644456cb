"""The load generator: exact malformed/late shares, records the worker judges as intended, pacing,
the progress lines, and the produce command's one-line errors for bad options."""

from __future__ import annotations

import asyncio
import io
import math
import os
import subprocess
import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest

from agents.ingest import MIN_EVENT_MS
from aggregations.judge import judge
from aggregations.spec import Spec, parse_spec
from commands.loadgen import (
    LATE,
    LATE_MARGIN_MS,
    MALFORMED,
    MALFORMED_KINDS,
    VALID,
    AnomalySchedule,
    EventGenerator,
    GeneratedRecord,
    Progress,
    SpecEventGenerator,
    late_offset_ms,
    parse_fraction,
    parse_type_weights,
    produce_events,
)
from commands.produce import StatusDisplay, status_line, summary_line
from formats.events import INVALID_JSON, Event, Rejection, decode_event
from settings import load
from tables.partials import Limits, PartitionPartials, Record
from testing.fakes import fold_batch

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = load({})  # the defaults: 60 s lateness, windows of 60 s
NOW_MS = 1_793_574_000_000  # 2026-11-01T23:40:00Z


def _limits(now_ms: int = NOW_MS) -> Limits:
    """What the ingest agent accepts at `now_ms` (agents/ingest.py)."""
    pipeline = SETTINGS.pipeline
    return Limits(pipeline.max_event_bytes, MIN_EVENT_MS, pipeline.max_clock_skew_ms, now_ms)


def _decode(raw: bytes) -> Event | Rejection:
    limits = _limits()
    return decode_event(raw, max_bytes=limits.max_event_bytes, min_event_ms=limits.min_event_ms,
                        max_event_ms=limits.latest_event_ms(-1))


def _generator(**options: object) -> EventGenerator:
    pipeline = SETTINGS.pipeline
    offset_ms = late_offset_ms(pipeline.allowed_lateness_ms, pipeline.windows)
    return EventGenerator(late_offset_ms=offset_ms, **options)  # type: ignore[arg-type]


def _records(generator: EventGenerator, n: int) -> list[GeneratedRecord]:
    return [generator.record(NOW_MS + i) for i in range(n)]


# -- exact shares -------------------------------------------------------------------------


def _rounded(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


@pytest.mark.parametrize("text", ["0", "0.001", "0.01", "0.1", "1/3", "0.5", "0.999", "1"])
def test_one_fraction_gives_exact_counts_after_every_record(text: str) -> None:
    fraction = parse_fraction(text)
    malformed, late = AnomalySchedule(malformed=fraction), AnomalySchedule(late=fraction)
    for n in range(1, 5_001):
        malformed.next_kind()
        late.next_kind()
        assert malformed.malformed == math.floor(n * fraction), n
        assert late.late == _rounded(n * fraction), n


@pytest.mark.parametrize(("malformed", "late"), [("0.001", "0.001"), ("0.3", "0.4"), ("0.5", "0.5"),
                                                 ("1/3", "2/3"), ("0.25", "0.75"), ("0.07", "0.13")])
def test_both_fractions_malformed_exact_late_at_most_one_behind(malformed: str, late: str) -> None:
    m, f = parse_fraction(malformed), parse_fraction(late)
    schedule = AnomalySchedule(m, f)
    kinds = Counter()
    for n in range(1, 5_001):
        kinds[schedule.next_kind()] += 1
        assert schedule.malformed == kinds[MALFORMED] == math.floor(n * m)
        assert _rounded(n * f) - 1 <= schedule.late == kinds[LATE] <= _rounded(n * f)
        assert kinds[VALID] == n - schedule.malformed - schedule.late


@pytest.mark.parametrize("text", ["0.001", "0.01", "0.1", "1/7", "1/3", "0.5"])
def test_equal_fractions_are_both_exact(text: str) -> None:
    # Malformed positions cross integers of n*F, late ones half-integers: an interval of
    # width F <= 1/2 never holds both, so neither waits for the other.
    fraction = parse_fraction(text)
    schedule = AnomalySchedule(fraction, fraction)
    for n in range(1, 5_001):
        schedule.next_kind()
        assert (schedule.malformed, schedule.late) == (math.floor(n * fraction), _rounded(n * fraction)), n


def test_demo_defaults_give_exact_counts() -> None:
    # make run's 0.001/0.001: 10 malformed and 10 late in 10,000 events.
    generator = _generator(malformed=Fraction("0.001"), late=Fraction("0.001"))
    kinds = Counter(record.kind for record in _records(generator, 10_000))
    assert kinds == {VALID: 9_980, MALFORMED: 10, LATE: 10}


def test_fraction_arithmetic_is_exact() -> None:
    # As floats 0.1 * 30 = 3.0000000000000004 and 0.7 * 10 = 6.999999999999999: exact fractions avoid both.
    assert parse_fraction("0.1") == Fraction(1, 10)
    schedule = AnomalySchedule(late=parse_fraction("0.7"))
    for _ in range(10):
        schedule.next_kind()
    assert schedule.late == 7


# -- what each record is ------------------------------------------------------------------


def test_every_malformed_record_is_rejected_with_the_intended_reason() -> None:
    records = _records(_generator(malformed=Fraction(1)), 10 * len(MALFORMED_KINDS))
    reasons = Counter()
    for record in records:
        assert record.kind == MALFORMED
        result = _decode(record.value)
        assert isinstance(result, Rejection), record.value
        assert result.reason == record.reason, (record.value, result)
        reasons[result.reason] += 1
    # Every kind in the cycle, equally often; NaN and 1e999 are invalid JSON to orjson.
    expected = Counter(kind.reason for kind in MALFORMED_KINDS)
    assert reasons == {reason: 10 * times for reason, times in expected.items()}
    assert expected[INVALID_JSON] == 3


def test_malformed_records_are_the_keyed_events_corrupted() -> None:
    # The key stays the user_id, so a malformed record lands where its user's events do.
    for record in _records(_generator(malformed=Fraction(1)), len(MALFORMED_KINDS)):
        assert record.key.startswith(b"u") and record.key in record.value


def test_valid_and_late_records_decode() -> None:
    generator = _generator(malformed=Fraction("0.1"), late=Fraction("0.2"))
    for i, record in enumerate(_records(generator, 1_000)):
        if record.kind == MALFORMED:
            continue
        event = _decode(record.value)
        assert isinstance(event, Event), record
        assert record.key == event.user_id.encode()
        assert event.event_ms == (NOW_MS + i if record.kind == VALID else NOW_MS + i - generator.late_offset_ms)


def test_late_offset_is_lateness_plus_longest_window_plus_margin() -> None:
    pipeline = load({"ALLOWED_LATENESS": "90s", "WINDOWS": "short:10s,long:5m:1m"}).pipeline
    assert late_offset_ms(pipeline.allowed_lateness_ms, pipeline.windows) == 90_000 + 300_000 + LATE_MARGIN_MS
    default = SETTINGS.pipeline
    assert late_offset_ms(default.allowed_lateness_ms, default.windows) == 180_000  # the --late help says 3 min


def test_late_records_miss_every_window_of_a_worker_that_keeps_up() -> None:
    """The worker's own stage-1 logic: with the frontier at now - lateness, a late record has
    every one of its windows closed and an on-time record none."""
    pipeline = SETTINGS.pipeline
    records = _records(_generator(late=Fraction("0.1")), 1_000)
    frontier_ms = NOW_MS - pipeline.allowed_lateness_ms
    outcome = fold_batch([Record(0, offset, r.value) for offset, r in enumerate(records)], {0: PartitionPartials(0)},
                         pipeline.windows, {0: frontier_ms}, _limits())
    late_offsets = {late.record.offset for late in outcome.late}
    assert late_offsets == {offset for offset, r in enumerate(records) if r.kind == LATE}
    assert len(late_offsets) == 100
    windows_per_event = sum(spec.size_ms // spec.step_ms for spec in pipeline.windows)
    assert all(len(late.closed) == windows_per_event for late in outcome.late)
    # With the margin to spare: still late for a worker up to LATE_MARGIN_MS behind.
    longest_ms = max(spec.size_ms for spec in pipeline.windows)
    assert all(late.event.event_ms + longest_ms <= frontier_ms - LATE_MARGIN_MS + 1_000 for late in outcome.late)


# -- determinism and weights --------------------------------------------------------------


def test_same_seed_same_records_other_seed_other_records() -> None:
    options = {"users": 50, "malformed": Fraction("0.05"), "late": Fraction("0.05")}
    first = _records(_generator(seed=7, **options), 2_000)
    assert first == _records(_generator(seed=7, **options), 2_000)
    assert first != _records(_generator(seed=8, **options), 2_000)


def test_fractions_change_which_records_not_the_others() -> None:
    plain = _records(_generator(seed=3), 2_000)
    mixed = _records(_generator(seed=3, malformed=Fraction("0.1"), late=Fraction("0.1")), 2_000)
    assert [p for p, m in zip(plain, mixed, strict=True) if m.kind == VALID] == [m for m in mixed if m.kind == VALID]


def test_weights_are_respected() -> None:
    # Each type's count is binomial(n, p); 5 standard deviations (about 0.2% of n here)
    # holds for practically any seed, while a wrong weight misses by hundreds of them.
    n = 60_000
    generator = EventGenerator(seed=11, users=1000, types="click:6,view:3,purchase:1")
    counts = Counter(generator.event(NOW_MS).event_type for _ in range(n))
    for name, p in (("click", 0.6), ("view", 0.3), ("purchase", 0.1)):
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(counts[name] - n * p) <= 5 * sigma, (name, counts)


def test_users_are_bounded() -> None:
    generator = EventGenerator(seed=1, users=5)
    assert {generator.event(NOW_MS).user_id for _ in range(500)} == {"u0", "u1", "u2", "u3", "u4"}


# -- bad options --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " , ", "click:0", "click:-1", "click:abc", "click:inf", "click:nan",
                                  ":3", "click:1,click:2", "a\tb:1", "x" * 300])
def test_bad_types_raise(text: str) -> None:
    with pytest.raises(ValueError, match="event type"):
        parse_type_weights(text)


def test_types_parse() -> None:
    assert parse_type_weights("click:6, view:3,purchase") == {"click": 6.0, "view": 3.0, "purchase": 1.0}


@pytest.mark.parametrize("text", ["-0.1", "1.01", "abc", "nan", "inf", "", "1/0"])
def test_bad_fractions_raise(text: str) -> None:
    with pytest.raises(ValueError, match="from 0 to 1"):
        parse_fraction(text)


def test_fractions_summing_above_one_raise() -> None:
    with pytest.raises(ValueError, match="at most 1"):
        AnomalySchedule(Fraction("0.6"), Fraction("0.5"))
    with pytest.raises(ValueError, match="late_offset_ms"):
        EventGenerator(late=Fraction("0.1"))


# -- pacing -------------------------------------------------------------------------------


class FakeTime:
    """A clock that only moves when the producer sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps = 0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.now += seconds


Sent = list[tuple[bytes, bytes]]


def _produce(generator: EventGenerator, fake: FakeTime, **options: object) -> tuple[Sent, Progress]:
    sent: Sent = []

    async def send(key: bytes, value: bytes) -> None:
        sent.append((key, value))

    progress = asyncio.run(produce_events(send, generator, clock=fake.clock, sleep=fake.sleep,  # type: ignore[arg-type]
                                          **options))
    return sent, progress


def test_rate_and_duration_give_rate_times_duration_events() -> None:
    fake = FakeTime()
    sent, progress = _produce(_generator(), fake, rate=100, duration_s=2.0)
    assert len(sent) == progress.produced == 200
    assert 1.95 <= progress.elapsed_s <= 2.1


def test_rate_paces_the_sends() -> None:
    fake = FakeTime()
    seen: list[Progress] = []
    _produce(_generator(), fake, rate=1_000, count=3_000, on_progress=seen.append)
    # At no point more than one tick's worth ahead of rate x elapsed.
    assert all(p.produced <= 1_000 * p.elapsed_s + 1 for p in seen)
    assert seen[-1].produced == 3_000


def test_rate_zero_sends_count_without_waiting() -> None:
    fake = FakeTime()
    generator = _generator(malformed=Fraction("0.01"), late=Fraction("0.02"))
    stamps: list[int] = []

    def event_ms(index: int) -> int:
        stamps.append(index)
        return NOW_MS + index

    sent, progress = _produce(generator, fake, rate=0, count=25_000, event_ms=event_ms)
    assert len(sent) == 25_000 and stamps == list(range(25_000))
    assert (progress.produced, progress.malformed, progress.late) == (25_000, 250, 500)
    assert fake.now == 100.0  # it only yielded to the loop


def test_rate_zero_with_duration_stops_at_the_duration() -> None:
    fake = FakeTime()
    generator = _generator()

    async def send(key: bytes, value: bytes) -> None:
        fake.now += 0.001  # a send takes 1 ms

    progress = asyncio.run(produce_events(send, generator, rate=0, duration_s=3.0, clock=fake.clock,
                                          sleep=fake.sleep))
    assert progress.produced == 3_000


# -- progress display ---------------------------------------------------------------------


def test_status_line_with_a_known_total() -> None:
    line = status_line(Progress(50_000, 50, 25, 2.0), rate=0, total_events=200_000, duration_s=0.0)
    assert line == "[##--------]  25%  2.0s  50,000/200,000 events  25,000 ev/s  malformed 50  late 25"


def test_status_line_without_an_end_shows_achieved_over_target_rate() -> None:
    line = status_line(Progress(4_000, 4, 4, 2.0), rate=2_500, total_events=0, duration_s=0.0)
    assert line == "2.0s  4,000 events  2,000/2,500 ev/s  malformed 4  late 4"


def test_status_line_duration_at_full_speed_shows_time_share() -> None:
    line = status_line(Progress(10, 0, 0, 5.0), rate=0, total_events=0, duration_s=10.0)
    assert line.startswith("[#####-----]  50%  5.0s  10 events")


def test_plain_display_writes_a_line_every_five_seconds_then_the_summary() -> None:
    fake = FakeTime()
    out = io.StringIO()
    display = StatusDisplay(out, tty=False, rate=1_000, total_events=0, duration_s=0.0, clock=fake.clock)
    for second in range(1, 13):
        fake.now += 1.0
        display.update(Progress(1_000 * second, second, 0, float(second)))
    display.finish(Progress(12_000, 12, 0, 12.0))
    assert out.getvalue().splitlines() == [
        "produced 5000 events (1000 events/s, 5 malformed, 0 late)",
        "produced 10000 events (1000 events/s, 10 malformed, 0 late)",
        "produced 12000 events (12 malformed, 0 late) in 12.0s, 1000 events/s",
    ]


def test_terminal_display_redraws_one_line_in_place() -> None:
    fake = FakeTime()
    out = io.StringIO()
    display = StatusDisplay(out, tty=True, rate=0, total_events=100, duration_s=0.0, clock=fake.clock)
    for produced in (10, 20, 30):
        fake.now += 1.0
        display.update(Progress(produced, 0, 0, fake.now - 100.0))
    display.finish(Progress(100, 0, 0, 4.0))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith(summary_line(Progress(100, 0, 0, 4.0)) + "\n")
    assert text.count("\r") == 4  # three redraws and the clearing before the summary


# -- the command's errors -----------------------------------------------------------------


@pytest.mark.parametrize(("args", "error"), [
    (["--types", "click:x"], "Error: Invalid value for '--types': bad event type 'click:x': "
                             "expected name[:positive weight], e.g. click:6"),
    (["--malformed", "1.5"], "Error: Invalid value for '--malformed': expected a number from 0 to 1, got '1.5'"),
    (["--late", "-1"], "Error: Invalid value for '--late': expected a number from 0 to 1, got '-1'"),
    (["--malformed", "0.6", "--late", "0.5"], "Error: --malformed plus --late must be at most 1 (got 1.1)"),
    (["--rate", "-5"], "Error: Invalid value for '--rate': -5 is not in the range x>=0."),
])
def test_command_rejects_bad_options_with_one_line(args: list[str], error: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "produce", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == error


def test_the_docs_bad_option_example_is_what_faust_prints() -> None:
    """The docs' example (docs/operations.md), run as written: faust's console script from a checkout, no
    PYTHONPATH."""
    readme = (ROOT / "docs" / "operations.md").read_text()
    command = "$ faust -A app produce --types click:x\n"
    shown = readme[readme.index(command) + len(command):].split("```")[0]
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    faust = Path(sys.executable).parent / "faust"
    result = subprocess.run([str(faust), "-A", "app", "produce", "--types", "click:x"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", shown)


# -- a spec's events ----------------------------------------------------------------------

_DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "aggregations"
_WINDOWS = ["tumbling_1m", "hopping_1m"]
_T_MS = 1_733_480_000_000


def _shipped_spec(name: str) -> Spec:
    return parse_spec((_DEPLOY / f"{name}.toml").read_text(), _WINDOWS)


@pytest.mark.parametrize("name", ["article", "clickstream", "iot"])
def test_a_spec_generator_means_what_the_judge_counts(name: str) -> None:
    """Every record's intended outcome (SpecRecord.counted, the malformed reason) is what the pipeline's
    judge makes of it: two independent readings of the spec agree."""
    spec = _shipped_spec(name)
    generator = SpecEventGenerator(spec, keys=7, seed=3, malformed=Fraction(1, 10), late=Fraction(1, 10),
                                   late_offset_ms=120_000)
    kinds: Counter[str] = Counter()
    keys: dict[str, set[tuple[object, ...]]] = {}
    for i in range(400):
        record = generator.record(_T_MS + i * 250)
        kinds[record.kind] += 1
        judged = judge(record.value, spec, max_bytes=65_536, min_event_ms=MIN_EVENT_MS, max_event_ms=_T_MS + 10**9)
        if record.kind == "malformed":
            assert isinstance(judged, Rejection) and judged.reason == record.reason
            continue
        assert not isinstance(judged, Rejection) and judged.event_ms == record.event_ms
        want = {c.aggregation: (c.key, c.measures) for c in record.counted}
        got = {a.name: (r.key, r.measures) for a, r in zip(spec.aggregations, judged.results, strict=True)
               if r is not None and not isinstance(r, Rejection)}
        assert got == want and len(got) == sum(r is not None for r in judged.results)
        for aggregation, (key, _) in want.items():
            keys.setdefault(aggregation, set()).add(key)
    assert kinds == {"valid": 320, "malformed": 40, "late": 40}
    # Each aggregation without a `where` sees every key number; a `where` keeps some of them.
    for aggregation in spec.aggregations:
        assert len(keys[aggregation.name]) == (7 if not aggregation.where else 3), aggregation.name


def test_a_spec_generator_refuses_a_spec_it_cannot_honour() -> None:
    time = '[time]\nfield = "ts"\nformat = "epoch_ms"\n'
    clash = time + ('[[aggregation]]\nname = "a"\nkey = ["k"]\nmeasures = ["m"]\n'
                    '[[aggregation]]\nname = "b"\nkey = ["k:int"]\nmeasures = ["m"]\n')
    nested = time + '[[aggregation]]\nname = "a"\nkey = ["d"]\nmeasures = ["d.m"]\n'
    for text, message in [(clash, "uses k both as string and as int"), (nested, "uses d and d.m, one inside")]:
        with pytest.raises(ValueError, match=message):
            SpecEventGenerator(parse_spec(text, _WINDOWS), keys=1)
    with pytest.raises(ValueError, match="keys must be at least 1"):
        SpecEventGenerator(_shipped_spec("iot"), keys=0)
    with pytest.raises(ValueError, match="metrics.temp is not a key field of the spec: its key fields are "
                                         "device.id, device.site"):
        SpecEventGenerator(_shipped_spec("iot"), keys=10, field_keys={"metrics.temp": 2})
    with pytest.raises(ValueError, match="device.site needs at least 1 value, not 0"):
        SpecEventGenerator(_shipped_spec("iot"), keys=10, field_keys={"device.site": 0})


def test_a_key_field_with_fewer_values_keeps_each_key_in_one_of_them() -> None:
    """100 devices in 7 sites: every device always reports the same site, and the sites' aggregation has 7 keys."""
    generator = SpecEventGenerator(_shipped_spec("iot"), keys=100, field_keys={"device.site": 7}, seed=1)
    site_of: dict[object, set[object]] = {}
    for i in range(300):
        counted = {c.aggregation: c.key for c in generator.record(_T_MS + i).counted}
        site_of.setdefault(counted["devices"], set()).add(counted["sites"])
    assert len(site_of) == 100 and all(len(sites) == 1 for sites in site_of.values())
    assert set().union(*site_of.values()) == {(f"device_site-{n}",) for n in range(7)}
