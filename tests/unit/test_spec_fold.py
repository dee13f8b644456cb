"""Stage 1's fold of a spec's events (tables/partials.fold_judged) against a reference built from the
judgement of each event (aggregations/judge.py) and the rules of the fold, windows and close: the same
partials per (family, start, key), the same dead letters with their reasons, the same late records
with the windows they missed, in any split of the records into batches, with replays."""

from __future__ import annotations

import warnings
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregations.judge import Counted, SpecJudge, judge_object
from aggregations.spec import parse_spec
from formats.events import MISSING_FIELD, WRONG_TYPE, iso_utc
from formats.partials import PartialKey, key_text
from tables.families import families
from tables.partials import (
    BatchOutcome,
    Limits,
    PartitionPartials,
    Record,
    fold_judged,
    fold_measures,
    new_measures_partial,
)
from tables.windows import is_closed, parse_windows, window_starts

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "aggregations"
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
SPEC = parse_spec((DEPLOY / "iot.toml").read_text(), [w.name for w in WINDOWS])
FAMILIES = families(WINDOWS, SPEC)
JUDGE = SpecJudge(SPEC)
FAMILIES_OF = {a.name: [f for f in FAMILIES if f.aggregation == a] for a in SPEC.aggregations}
BASE_MS = 1_765_000_020_000  # a multiple of 60,000
LIMITS = Limits(max_event_bytes=4_096, min_event_ms=946_684_800_000, max_clock_skew_ms=0, now_ms=BASE_MS + 10**7)

reading = st.fixed_dictionaries({
    "device": st.one_of(st.fixed_dictionaries({"id": st.sampled_from(["d-1", "d-2", "d-3"]),
                                               "site": st.sampled_from(["berlin", "paris"])}),
                        st.fixed_dictionaries({"site": st.just("berlin")}),  # no id: a dead letter for devices
                        st.fixed_dictionaries({"id": st.just(1.5), "site": st.just("paris")})),  # wrong type
    # Few values, both zeros among them: ties in min and max keep the first (0.0 and -0.0 are equal).
    "metrics": st.fixed_dictionaries({}, optional={"temp": st.one_of(st.integers(-8, 8).map(lambda q: q / 4),
                                                                     st.just(-0.0)),
                                                   "hum": st.one_of(st.integers(0, 400).map(lambda q: q / 4),
                                                                    st.just(-0.0), st.just("wet"))}),
    "time": st.one_of(st.integers(-120_000, 200_000).map(lambda d: iso_utc(BASE_MS + d)), st.just("noon")),
})


def _reference(records: list[Record], frontier_ms: int | None) -> tuple[dict[PartialKey, list[float]],
                                                                        list[tuple[int, str]],
                                                                        list[tuple[int, tuple[tuple[str, int], ...]]]]:
    partials: dict[PartialKey, list[float]] = {}
    dead: list[tuple[int, str]] = []
    late: list[tuple[int, tuple[tuple[str, int], ...]]] = []
    for record in records:
        judged = judge_object(orjson.loads(record.raw), SPEC, min_event_ms=LIMITS.min_event_ms,
                              max_event_ms=LIMITS.latest_event_ms(record.written_ms))
        if not hasattr(judged, "results"):
            dead.append((record.offset, judged.reason))  # type: ignore[union-attr]
            continue
        reasons, missed = [], []
        for aggregation, result in zip(SPEC.aggregations, judged.results, strict=True):  # type: ignore[union-attr]
            if result is None:
                continue
            if not isinstance(result, Counted):
                reasons.append(result.reason)
                continue
            for family in FAMILIES_OF[aggregation.name]:
                for start in window_starts(family, judged.event_ms):  # type: ignore[union-attr]
                    if is_closed(start, family.size_ms, frontier_ms):
                        missed.append((family.name, start))
                        continue
                    key = PartialKey(family.name, start, key_text(result.key))
                    current = partials.get(key)
                    if current is None:
                        partials[key] = new_measures_partial(result.measures, record.offset)
                    elif record.offset > current[-1]:
                        fold_measures(current, result.measures, record.offset)
        if reasons:
            dead.append((record.offset, reasons[0]))
        if missed:
            late.append((record.offset, tuple(missed)))
    return partials, dead, late


def _bits(partials: dict[PartialKey, list[float]]) -> dict[PartialKey, bytes]:
    return {key: orjson.dumps(partial) for key, partial in partials.items()}


def _has_time(record: Record) -> bool:
    """The record's document and time are good: it is archived, whatever the aggregations say."""
    judged = judge_object(orjson.loads(record.raw), SPEC, min_event_ms=LIMITS.min_event_ms,
                          max_event_ms=LIMITS.latest_event_ms(record.written_ms))
    return hasattr(judged, "results")


@settings(max_examples=150, deadline=None)
@given(events=st.lists(st.tuples(reading, st.integers(0, 2)), max_size=40), cut=st.integers(0, 40),
       frontier=st.one_of(st.none(), st.integers(-60_000, 120_000)))
def test_the_spec_fold_equals_the_judgement_and_the_rules(events: list[tuple[dict[str, object], int]], cut: int,
                                                          frontier: int | None) -> None:
    records, offset = [], 0
    for event, gap in events:
        offset += gap  # 0: the same offset again, a replay
        records.append(Record(0, offset, orjson.dumps(event), -1))
    frontier_ms = None if frontier is None else BASE_MS + frontier
    partials, outcome = PartitionPartials(0), BatchOutcome()
    fold_judged(0, records[:cut], partials, JUDGE, FAMILIES_OF, frontier_ms, LIMITS, outcome)
    partials.take_dirty()
    before = partials.values
    fold_judged(0, records[cut:], partials, JUDGE, FAMILIES_OF, frontier_ms, LIMITS, outcome)
    # The second batch marks dirty exactly the keys it changed (a flush sends those).
    changed = {key for key, partial in partials.values.items() if before.get(key) != partial}
    assert {instance.key(slot) for instance, slots in partials.take_dirty() for slot in slots} == changed
    want, dead, late = _reference(records, frontier_ms)
    assert _bits(partials.values) == _bits(want)  # == alone would take -0.0 for 0.0
    assert [(d.record.offset, d.rejection.reason) for d in outcome.dead_letters] == dead
    assert [(item.record.offset, item.closed) for item in outcome.late] == late
    whole_dead = {offset for offset, _ in dead} - {r.offset for r in records if _has_time(r)}
    archived = outcome.columns[0]
    assert archived.offsets == [r.offset for r in records if _has_time(r)] and not whole_dead & set(archived.offsets)
    assert archived.raws == [r.raw for r in records if _has_time(r)]  # type: ignore[union-attr]
    for (family, _start), instance in partials.instances.items():
        assert instance.measures == next(f.measures for f in FAMILIES if f.name == family)


def test_one_dead_letter_names_every_aggregation_that_rejects_the_event() -> None:
    event = {"device": {"site": "berlin"}, "metrics": {"temp": "hot"}, "time": iso_utc(BASE_MS)}
    outcome = BatchOutcome()
    fold_judged(0, [Record(0, 5, orjson.dumps(event), -1)], PartitionPartials(0), JUDGE, FAMILIES_OF, None, LIMITS,
                outcome)
    [dead] = outcome.dead_letters
    assert dead.rejection.reason == MISSING_FIELD
    assert dead.rejection.detail == ("missing_field: device.id is missing (aggregation devices); "
                                     f"{WRONG_TYPE}: metrics.temp must be a number, got str")


def test_a_sum_beyond_a_floats_range_is_inf_as_in_python() -> None:
    events = [{"device": {"id": "d-1", "site": "paris"}, "metrics": {"temp": 1e308}, "time": iso_utc(BASE_MS)}] * 2
    records = [Record(0, offset, orjson.dumps(event), -1) for offset, event in enumerate(events)]
    partials = PartitionPartials(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fold_judged(0, records, partials, JUDGE, FAMILIES_OF, None, LIMITS, BatchOutcome())
    want, _, _ = _reference(records, None)
    assert _bits(partials.values) == _bits(want)
    assert {partial[1] for partial in partials.values.values()} == {float("inf")}
