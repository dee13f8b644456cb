"""make bench-peers' check: the reference window totals and how a peer's rows compare with them."""

from __future__ import annotations

import math

import orjson

from bench.peers.job import HOPPING, SENTINEL_TYPE, TUMBLING, WindowRow
from bench.peers.project import job_window_names
from bench.peers.totals import Totals, check, reference, window_starts


def _event(event_type: str, ms: int, value: float) -> bytes:
    return orjson.dumps({"event_type": event_type, "timestamp": ms, "user_id": "u1", "value": value})


def _rows(expected: dict, **changes: object) -> list[WindowRow]:
    return [WindowRow(w, start, t, tot.count, tot.sum, tot.min, tot.max, tot.sum / tot.count)._replace(**changes)
            for (w, start, t), tot in expected.items()]


EVENTS = [_event("click", 0, 1.5), _event("click", 45_000, 2.0), _event("view", 59_999, 4.0),
          _event("click", 60_000, 0.25), _event(SENTINEL_TYPE, 3_600_000, 0.0)]


def test_window_starts_are_epoch_aligned_and_half_open() -> None:
    assert list(window_starts(0, 60_000)) == [0]
    assert list(window_starts(59_999, 60_000)) == [0]
    assert list(window_starts(60_000, 60_000)) == [60_000]
    assert list(window_starts(45_000, 30_000)) == [0, 30_000]
    assert list(window_starts(0, 30_000)) == [-30_000, 0]
    assert list(window_starts(-1, 30_000)) == [-60_000, -30_000]


def test_reference_totals_every_window_of_every_type_without_the_sentinels() -> None:
    assert reference(EVENTS) == {
        (TUMBLING, 0, "click"): Totals(2, 3.5, 1.5, 2.0),
        (TUMBLING, 0, "view"): Totals(1, 4.0, 4.0, 4.0),
        (TUMBLING, 60_000, "click"): Totals(1, 0.25, 0.25, 0.25),
        (HOPPING, -30_000, "click"): Totals(1, 1.5, 1.5, 1.5),
        (HOPPING, 0, "click"): Totals(2, 3.5, 1.5, 2.0),
        (HOPPING, 30_000, "click"): Totals(2, 2.25, 0.25, 2.0),
        (HOPPING, 0, "view"): Totals(1, 4.0, 4.0, 4.0),
        (HOPPING, 30_000, "view"): Totals(1, 4.0, 4.0, 4.0),
        (HOPPING, 60_000, "click"): Totals(1, 0.25, 0.25, 0.25),
    }


def test_the_reference_itself_checks_exact() -> None:
    expected = reference(EVENTS)
    verdict = check(expected, _rows(expected))
    assert verdict.exact
    assert (verdict.windows, verdict.matching, verdict.missing, verdict.wrong) == (9, 9, 0, [])
    assert verdict.dropped == {TUMBLING: 0, HOPPING: 0}
    assert verdict.summary() == "exact (9 windows)"


def test_sums_may_differ_by_rounding_only() -> None:
    expected = {(TUMBLING, 0, "click"): Totals(3, 0.6, 0.1, 0.3)}
    rounded = 0.1 + 0.2 + 0.3  # 0.6000000000000001: another order of the same additions
    assert check(expected, [WindowRow(TUMBLING, 0, "click", 3, rounded, 0.1, 0.3, rounded / 3)]).exact
    off = 0.6 * (1 + 1e-6)
    assert not check(expected, [WindowRow(TUMBLING, 0, "click", 3, off, 0.1, 0.3, off / 3)]).exact


def test_missing_windows_and_short_counts_are_dropped_events() -> None:
    expected = reference(EVENTS)
    rows = [row for row in _rows(expected) if (row.window, row.start_ms, row.event_type) != (HOPPING, 0, "view")]
    rows = [row._replace(count=1) if (row.window, row.start_ms, row.event_type) == (TUMBLING, 0, "click") else row
            for row in rows]
    verdict = check(expected, rows)
    assert not verdict.exact
    assert (verdict.matching, verdict.missing, verdict.wrong) == (7, 1, [(TUMBLING, 0, "click")])
    assert verdict.dropped == {TUMBLING: 1, HOPPING: 1}
    assert verdict.summary() == "7/9 windows exact, 1 missing, 1 wrong"


def test_a_window_twice_or_one_not_in_the_input_is_wrong() -> None:
    expected = reference(EVENTS)
    rows = _rows(expected)
    extra = WindowRow(TUMBLING, 120_000, "click", 1, 1.0, 1.0, 1.0, 1.0)
    verdict = check(expected, [*rows, rows[0], extra])
    assert not verdict.exact
    twice = (rows[0].window, rows[0].start_ms, rows[0].event_type)
    assert verdict.wrong == sorted([twice, (TUMBLING, 120_000, "click")])
    assert verdict.dropped == {TUMBLING: 0, HOPPING: 0}


def test_min_and_max_must_match_exactly() -> None:
    expected = {(TUMBLING, 0, "click"): Totals(2, 3.0, 1.0, 2.0)}
    assert not check(expected, [WindowRow(TUMBLING, 0, "click", 2, 3.0, math.nextafter(1.0, 0), 2.0, 1.5)]).exact


def test_the_workers_default_windows_are_the_peers_job() -> None:
    # The bench compares the worker's rows with the peers': its default windows must be the same job.
    assert sorted(job_window_names().values()) == sorted([TUMBLING, HOPPING])
