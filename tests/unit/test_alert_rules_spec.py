"""Alert rules of a spec's aggregation (alerts/rules.py, alerts/engine.py): a rule names the aggregation,
its window, the keys it watches and a measure's statistic; the engine judges each key's rows by that
measure. Time as data: windows are fed in order, no clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregations.spec import parse_spec
from alerts.engine import FIRING, RESOLVED, evaluate_window
from alerts.rules import Rule, RuleError, parse_rules
from formats.aggregates import AggregateRow, MeasureStats
from formats.alerts import Track
from formats.partials import key_text
from settings import SettingsError, load
from tables.windows import parse_windows

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
SPEC = parse_spec((ROOT / "deploy/aggregations/iot.toml").read_text(), [w.name for w in WINDOWS])
HOT = """
[[rule]]
name = "hot"
kind = "threshold"
aggregation = "devices"
window = "tumbling_1m"
measure = "metrics_temp.max"
op = ">"
threshold = 30
"""


def test_a_rule_of_an_aggregation() -> None:
    (rule,) = parse_rules(HOT.replace('measure =', 'keys = [{ device_id = "d-17" }, { device_id = "../x" }]\n'
                                                    'measure ='), WINDOWS, SPEC)
    assert (rule.aggregation, rule.window, rule.measure, rule.measure_index) == (
        "devices", "devices/tumbling_1m", "max", 0)
    assert rule.event_types == (key_text(("d-17",)), key_text(("../x",)))
    (humidity,) = parse_rules(HOT.replace("metrics_temp.max", "metrics_hum.mean"), WINDOWS, SPEC)
    assert (humidity.measure, humidity.measure_index, humidity.event_types) == ("mean", 1, ())
    (gone,) = parse_rules('[[rule]]\nname = "gone"\nkind = "absence"\naggregation = "sites"\nwindow = "hopping_1m"\n'
                          'keys = [{ device_site = "berlin" }]\n', WINDOWS, SPEC)
    assert (gone.window, gone.measure_index, gone.event_types) == ("sites/hopping_1m", None, ('["berlin"]',))


@pytest.mark.parametrize(("change", "message"), [
    (('aggregation = "devices"\n', ""), "rule 'hot': field 'aggregation': expected one of the spec's aggregations, "
                                        "devices, sites (got None)"),
    (('"devices"', '"rooms"'), "field 'aggregation': expected one of the spec's aggregations, devices, sites "
                               "(got 'rooms')"),
    (('"tumbling_1m"', '"daily"'), "field 'window': expected one of aggregation 'devices''s windows, tumbling_1m, "
                                   "hopping_1m (got 'daily')"),
    (("metrics_temp.max", "metrics_temp"), "field 'measure': expected <measure>.<statistic>: a measure of "
                                           "'devices', metrics_temp, metrics_hum, and one of count, sum, mean, "
                                           "min, max (got 'metrics_temp')"),
    (("metrics_temp.max", "temp.max"), "field 'measure': expected <measure>.<statistic>"),
    (('measure =', 'keys = [{ device = "d-1" }]\nmeasure ='), "field 'keys': each key gives every column of the "
                                                             "aggregation's key once, as { device_id = \"...\" }"),
    (('measure =', 'keys = [{ device_id = 17 }]\nmeasure ='), "field 'keys': device_id must be string (got 17)"),
    (('measure =', 'keys = [{ device_id = "a" }, { device_id = "a" }]\nmeasure ='), "field 'keys': a key is listed "
                                                                                  "twice"),
    (('measure =', 'event_types = ["x"]\nmeasure ='), "field 'event_types': a rule of an aggregation lists its keys"),
])
def test_a_bad_rule_of_an_aggregation_names_the_field(change: tuple[str, str], message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(HOT.replace(*change), WINDOWS, SPEC)
    assert message in str(caught.value), str(caught.value)


def test_an_absence_rule_of_an_aggregation_lists_its_keys_and_aggregations_need_a_spec() -> None:
    with pytest.raises(RuleError, match="field 'keys': an absence rule must list the keys it watches"):
        parse_rules('[[rule]]\nname = "gone"\nkind = "absence"\naggregation = "sites"\nwindow = "hopping_1m"\n',
                    WINDOWS, SPEC)
    with pytest.raises(RuleError, match="field 'aggregation': only with an AGGREGATIONS spec"):
        parse_rules(HOT, WINDOWS)


def test_the_shipped_iot_rules_parse() -> None:
    rules = load({"AGGREGATIONS": str(ROOT / "deploy/aggregations/iot.toml"),
                  "ALERT_RULES": str(ROOT / "deploy/alerts/rules.iot.toml")}).pipeline.alert_rules
    assert [(r.kind, r.window, r.measure) for r in rules] == [
        ("threshold", "devices/tumbling_1m", "max"), ("anomaly", "sites/tumbling_1m", "mean"),
        ("absence", "sites/tumbling_1m", "count")]


def test_settings_take_rules_of_the_spec_and_refuse_the_articles(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(HOT)
    spec_env = {"AGGREGATIONS": str(ROOT / "deploy/aggregations/iot.toml"), "ALERT_RULES": str(path)}
    assert [r.name for r in load(spec_env).pipeline.alert_rules] == ["hot"]
    with pytest.raises(SettingsError, match="rule 'error_spike': field 'aggregation': expected one of the spec's"):
        load({**spec_env, "ALERT_RULES": str(ROOT / "deploy/alerts/rules.example.toml")})


def _row(key: str, temp: tuple[int, float] | None, start_ms: int) -> AggregateRow:
    stats = None if temp is None else MeasureStats(temp[0], temp[1] * temp[0], temp[1], temp[1])
    return AggregateRow("devices", "tumbling_1m", start_ms, start_ms + 60_000, (key,), (stats, None))


def _run(rule: Rule, windows: list[dict[str, AggregateRow]]) -> list[tuple[str, str, float]]:
    tracks: dict[str, Track] = {}
    found = []
    for i, rows in enumerate(windows):
        alerts, _ = evaluate_window([rule], tracks, "devices/tumbling_1m", i * 60_000, (i + 1) * 60_000,
                                    {key_text(row.key): row for row in rows.values()})
        found += [(a.state, a.event_type, a.value) for a in alerts]
    return found


def test_the_engine_judges_each_key_by_its_measure() -> None:
    (rule,) = parse_rules(HOT, WINDOWS, SPEC)
    d1, d2 = key_text(("d-1",)), key_text(("d-2",))
    windows = [{"a": _row("d-1", (2, 25.0), 0), "b": _row("d-2", (1, 31.0), 0)},
               {"a": _row("d-1", (1, 35.0), 60_000), "b": _row("d-2", None, 60_000)},  # d-2: no temperature
               {"a": _row("d-1", (3, 20.0), 120_000), "b": _row("d-2", (1, 20.0), 120_000)}]
    assert _run(rule, windows) == [(FIRING, d2, 31.0), (FIRING, d1, 35.0), (RESOLVED, d1, 20.0),
                                   (RESOLVED, d2, 20.0)]
    (gone,) = parse_rules('[[rule]]\nname = "gone"\nkind = "absence"\naggregation = "devices"\n'
                          'window = "tumbling_1m"\nkeys = [{ device_id = "d-2" }]\n', WINDOWS, SPEC)
    # d-2 has a row in every window, its temperature or not: never absent. Then a window without it.
    assert _run(gone, windows) == []
    assert _run(gone, [*windows, {"a": _row("d-1", (1, 1.0), 180_000)}]) == [(FIRING, d2, 0.0)]
