"""The rule engine with windows passed as data: each kind fires, does not fire, waits for `for`
consecutive windows, and resolves after `resolve_for` normal ones; replays from a copy of the state
give the same alerts; unlisted types are forgotten; quiet stretches reach a fixed point."""

from __future__ import annotations

import copy
import dataclasses
from typing import NamedTuple

from alerts.engine import FIRING, RESOLVED, alert_id, evaluate_window, quiet_limit
from alerts.rules import Rule, parse_rules
from formats.alerts import Track
from tables.windows import parse_windows

WINDOWS = parse_windows("tumbling_1m:60s")
SIZE = 60_000


class Row(NamedTuple):
    count: int
    sum: float
    min: float
    max: float


def rule(body: str) -> Rule:
    (parsed,) = parse_rules(f'[[rule]]\nname = "r"\nwindow = "tumbling_1m"\n{body}\n', WINDOWS)
    return parsed


def run(r: Rule, windows: list[dict[str, Row]], tracks: dict[str, Track] | None = None
        ) -> list[tuple[int, str, str, float]]:
    """(window index, event type, state, value) of every alert over consecutive windows."""
    tracks = {} if tracks is None else tracks
    out = []
    for i, rows in enumerate(windows):
        alerts, _ = evaluate_window([r], tracks, "tumbling_1m", i * SIZE, (i + 1) * SIZE, rows)
        out += [(i, a.event_type, a.state, a.value) for a in alerts]
    return out


def counts(*values: int, event_type: str = "error") -> list[dict[str, Row]]:
    return [{event_type: Row(v, float(v), 1.0, 1.0)} if v else {} for v in values]


THRESHOLD = 'kind = "threshold"\nevent_types = ["error"]\nmeasure = "count"\nop = ">"\nthreshold = 10\n'


def test_threshold_fires_and_resolves() -> None:
    assert run(rule(THRESHOLD), counts(5, 11, 12, 3, 20)) == [
        (1, "error", FIRING, 11.0), (3, "error", RESOLVED, 3.0), (4, "error", FIRING, 20.0)]


def test_threshold_does_not_fire_at_or_below() -> None:
    assert run(rule(THRESHOLD), counts(10, 1, 0, 10)) == []


def test_for_needs_consecutive_windows() -> None:
    r = rule(THRESHOLD + "for = 3")
    assert run(r, counts(11, 11, 5, 11, 11, 11, 11)) == [(5, "error", FIRING, 11.0)]


def test_resolve_for_needs_consecutive_normal_windows() -> None:
    r = rule(THRESHOLD + "resolve_for = 2")
    assert run(r, counts(11, 1, 11, 1, 1, 1)) == [(0, "error", FIRING, 11.0), (4, "error", RESOLVED, 1.0)]


def test_a_window_without_a_row_counts_zero() -> None:
    """Errors that stop altogether resolve a count alert; a mean alert waits for a value."""
    assert run(rule(THRESHOLD), counts(11, 0)) == [(0, "error", FIRING, 11.0), (1, "error", RESOLVED, 0.0)]
    mean = rule('kind = "threshold"\nevent_types = ["error"]\nmeasure = "mean"\nop = ">"\nthreshold = 2')
    rows = [{"error": Row(1, 5.0, 5.0, 5.0)}, {}, {}, {"error": Row(2, 2.0, 1.0, 1.0)}]
    assert run(mean, rows) == [(0, "error", FIRING, 5.0), (3, "error", RESOLVED, 1.0)]


def test_unlisted_types_each_have_their_own_track() -> None:
    r = rule('kind = "threshold"\nmeasure = "max"\nop = ">="\nthreshold = 7')
    rows = [{"a": Row(1, 7.0, 7.0, 7.0), "b": Row(1, 1.0, 1.0, 1.0)}, {"b": Row(1, 9.0, 9.0, 9.0)}]
    assert run(r, rows) == [(0, "a", FIRING, 7.0), (1, "b", FIRING, 9.0)]


CHANGE = 'kind = "change"\nevent_types = ["purchase"]\nmeasure = "count"\nop = "<"\nthreshold = 0.5\n'


def test_change_fires_on_a_drop_against_the_previous_window() -> None:
    rows = counts(10, 9, 4, 4, 8, event_type="purchase")
    assert run(rule(CHANGE), rows) == [(2, "purchase", FIRING, 4 / 9), (3, "purchase", RESOLVED, 1.0)]


def test_change_does_not_fire_on_a_rise_or_a_small_drop() -> None:
    assert run(rule(CHANGE), counts(10, 20, 11, 6, event_type="purchase")) == []


def test_change_to_nothing_fires_and_waits_for_the_type_to_come_back() -> None:
    """0 / 10 breaches; then 0 / 0 has no value: the alert stays until purchases are back."""
    rows = counts(10, 0, 0, 0, 3, 3, event_type="purchase")
    assert run(rule(CHANGE), rows) == [(1, "purchase", FIRING, 0.0), (5, "purchase", RESOLVED, 1.0)]


def test_change_with_for() -> None:
    rows = counts(16, 7, 3, 1, 1, event_type="purchase")
    assert run(rule(CHANGE + "for = 3"), rows) == [(3, "purchase", FIRING, 1 / 3), (4, "purchase", RESOLVED, 1.0)]


ANOMALY = 'kind = "anomaly"\nevent_types = ["api"]\nmeasure = "sum"\nop = ">"\nthreshold = 3\ntrailing = 4\n'


def sums(*values: float) -> list[dict[str, Row]]:
    return [{"api": Row(1, v, v, v)} for v in values]


def test_anomaly_fires_on_a_z_score_above_the_trailing_windows() -> None:
    # trailing 10, 12, 10, 12: mean 11, deviation 1, so 15 is z = 4
    got = run(rule(ANOMALY), sums(10, 12, 10, 12, 15, 12))
    assert got[0] == (4, "api", FIRING, 4.0)
    assert got[1][:3] == (5, "api", RESOLVED)


def test_anomaly_needs_a_full_history_and_a_spread() -> None:
    assert run(rule(ANOMALY), sums(10, 12, 10, 100)) == []  # three trailing windows only
    assert run(rule(ANOMALY), sums(5, 5, 5, 5, 100)) == []  # deviation 0: no z-score
    assert run(rule(ANOMALY), sums(10, 12, 10, 12, 13)) == []  # z = 2


def test_anomaly_with_for() -> None:
    got = run(rule(ANOMALY + "for = 2"), sums(10, 12, 10, 12, 15, 40))
    assert [(i, s) for i, _, s, _ in got] == [(5, FIRING)]


ABSENCE = 'kind = "absence"\nevent_types = ["heartbeat"]\nfor = 3\n'


def test_absence_fires_after_k_windows_without_the_type_and_resolves_when_it_is_back() -> None:
    rows = counts(1, 0, 0, 0, 0, 2, event_type="heartbeat")
    assert run(rule(ABSENCE), rows) == [(3, "heartbeat", FIRING, 0.0), (5, "heartbeat", RESOLVED, 2.0)]


def test_absence_does_not_fire_on_shorter_gaps() -> None:
    assert run(rule(ABSENCE), counts(1, 0, 0, 1, 0, 0, 1, event_type="heartbeat")) == []


def test_absence_fires_for_a_type_never_seen() -> None:
    assert run(rule(ABSENCE), [{}, {}, {}]) == [(2, "heartbeat", FIRING, 0.0)]


def test_ids_are_deterministic_and_safe() -> None:
    assert alert_id("r", "a:b/c", 60_000, FIRING) == "r:a%3Ab%2Fc:60000:firing"
    alerts, _ = evaluate_window([rule(ABSENCE.replace("for = 3", "for = 1"))], {}, "tumbling_1m", 0, SIZE, {})
    assert [a.id for a in alerts] == ["r:heartbeat:0:firing"]


def test_a_replay_from_a_copy_of_the_state_gives_the_same_alerts() -> None:
    r = rule(CHANGE)
    rows = counts(10, 3, 3, 9, 1, 0, 0, 5, event_type="purchase")
    tracks: dict[str, Track] = {}
    first = run(r, rows[:4], tracks)
    saved = copy.deepcopy(tracks)
    rest = run(r, rows[4:], tracks)
    again = run(r, rows[4:], saved)
    assert rest == again and first


def test_unlisted_types_are_forgotten_when_quiet_and_not_firing() -> None:
    r = rule('kind = "threshold"\nmeasure = "count"\nop = ">"\nthreshold = 5')
    tracks: dict[str, Track] = {}
    run(r, [{"once": Row(1, 1.0, 1.0, 1.0)}] + [{}] * 20, tracks)
    assert tracks == {}
    run(r, [{"loud": Row(9, 1.0, 1.0, 1.0)}], tracks)
    assert list(tracks) == ["r:loud"] and tracks["r:loud"].firing


def test_other_windows_rules_are_not_evaluated() -> None:
    alerts, changed = evaluate_window([rule(ABSENCE)], {}, "hopping_1m", 0, SIZE, {})
    assert (alerts, changed) == ([], set())


def test_a_quiet_stretch_reaches_a_fixed_point_within_quiet_limit() -> None:
    rules = [dataclasses.replace(rule(body), name=f"r{i}") for i, body in enumerate((THRESHOLD, CHANGE, ANOMALY,
                                                                                      ABSENCE))]
    tracks: dict[str, Track] = {}
    busy = [{"error": Row(20, 1.0, 1.0, 1.0), "purchase": Row(10, 1.0, 1.0, 1.0), "api": Row(1, 10.0 + i % 3, 1, 1),
             "heartbeat": Row(1, 1.0, 1.0, 1.0)} for i in range(8)]
    for i, rows in enumerate(busy):
        evaluate_window(rules, tracks, "tumbling_1m", i * SIZE, (i + 1) * SIZE, rows)
    limit = quiet_limit(rules)
    for i in range(limit):
        evaluate_window(rules, tracks, "tumbling_1m", (8 + i) * SIZE, (9 + i) * SIZE, {})
    for i in range(5):
        alerts, changed = evaluate_window(rules, tracks, "tumbling_1m", (8 + limit + i) * SIZE,
                                          (9 + limit + i) * SIZE, {})
        assert (alerts, changed) == ([], set())


def test_a_listed_type_is_judged_only_where_it_is_owned() -> None:
    """Each stage-2 partition judges the listed types routed to it: an absence fires once, not per partition."""
    r = rule(ABSENCE.replace("for = 3", "for = 1"))
    here, _ = evaluate_window([r], {}, "tumbling_1m", 0, SIZE, {}, owns=lambda t: t == "heartbeat")
    elsewhere, changed = evaluate_window([r], {}, "tumbling_1m", 0, SIZE, {}, owns=lambda t: False)
    assert ([a.event_type for a in here], elsewhere, changed) == (["heartbeat"], [], set())
