"""The rules file: the shipped example parses, and every malformed rule is refused with one line that
names the rule and the field, also through the real worker command (status 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.rules import RuleError, parse_rules
from settings import SettingsError, load
from tables.windows import parse_windows

ROOT = Path(__file__).resolve().parents[2]
WINDOWS = parse_windows("tumbling_1m:60s,hopping_1m:60s:30s")
GOOD = """
[[rule]]
name = "error_spike"
kind = "threshold"
window = "tumbling_1m"
event_types = ["error"]
measure = "count"
op = ">"
threshold = 100
"""


def test_the_shipped_example_parses() -> None:
    rules = load({"ALERT_RULES": str(ROOT / "deploy/alerts/rules.example.toml")}).pipeline.alert_rules
    assert [r.kind for r in rules] == ["threshold", "change", "anomaly", "absence"]
    spike = rules[0]
    assert (spike.name, spike.for_windows, spike.resolve_windows, spike.severity) == ("error_spike", 2, 2, "critical")
    assert spike.labels == (("runbook", "errors"), ("team", "platform"))


def test_defaults() -> None:
    (rule,) = parse_rules(GOOD, WINDOWS)
    assert (rule.for_windows, rule.resolve_windows, rule.severity, rule.labels, rule.trailing) == (1, 1, "warning",
                                                                                                  (), 0)


@pytest.mark.parametrize(("change", "message"), [
    ('kind = "threshold"', "rule 'error_spike': field 'kind': expected one of threshold, change, anomaly, absence"),
    ('window = "tumbling_1m"', "rule 'error_spike': field 'window': expected one of the WINDOWS setting's names"),
    ('measure = "count"', "rule 'error_spike': field 'measure': expected one of count, sum, mean, min, max"),
    ('op = ">"', "rule 'error_spike': field 'op': expected one of >, >=, <, <="),
    ("threshold = 100", "rule 'error_spike': field 'threshold': expected a finite number"),
    ('event_types = ["error"]', "rule 'error_spike': field 'event_types': expected a list of distinct"),
])
def test_a_bad_value_names_the_rule_and_the_field(change: str, message: str) -> None:
    key = change.split(" = ")[0]
    bad = GOOD.replace(change, f'{key} = "nonsense"' if key != "event_types" else 'event_types = "error"')
    with pytest.raises(RuleError) as caught:
        parse_rules(bad, WINDOWS)
    assert str(caught.value).startswith(message), caught.value


@pytest.mark.parametrize(("extra", "message"), [
    ("for = 0", "rule 'error_spike': field 'for': expected a whole number of windows from 1 to 1000 (got 0)"),
    ("for = true", "rule 'error_spike': field 'for': expected a whole number"),
    ("resolve_for = 1.5", "rule 'error_spike': field 'resolve_for': expected a whole number"),
    ("trailing = 5", "rule 'error_spike': field 'trailing': only an anomaly rule has trailing windows"),
    ('severity = "page"', "rule 'error_spike': field 'severity': expected one of critical, warning, info"),
    ('labels = { "bad-name" = "x" }', "rule 'error_spike': field 'labels': label name 'bad-name'"),
    ("labels = { team = 3 }", "rule 'error_spike': field 'labels': label 'team': expected a string"),
    ("treshold = 3", "rule 'error_spike': field 'treshold': unknown field"),
])
def test_a_bad_optional_field_names_the_rule_and_the_field(extra: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_rules(GOOD + extra + "\n", WINDOWS)
    assert str(caught.value).startswith(message), caught.value


def test_whole_file_problems() -> None:
    cases = {
        "[[rule]\n": "not valid TOML",
        "[rules]\nx = 1\n": "unknown top-level key 'rules'",
        GOOD + GOOD: "rule 'error_spike': field 'name': another rule has the same name",
        GOOD.replace('name = "error_spike"', 'name = "a:b"'): "rule #1: field 'name': expected 1 to 64 characters",
        GOOD.replace('kind = "threshold"', 'kind = "absence"').replace('measure = "count"\n', ""):
            "rule 'error_spike': field 'op': not used by an absence rule",
        GOOD.replace('kind = "threshold"', 'kind = "anomaly"'): "rule 'error_spike': field 'trailing': expected a "
                                                            "whole number of windows from 2",
    }
    for text, message in cases.items():
        with pytest.raises(RuleError) as caught:
            parse_rules(text, WINDOWS)
        assert str(caught.value).startswith(message), (text, caught.value)


def test_an_absence_rule_must_list_its_types() -> None:
    text = '[[rule]]\nname = "quiet"\nkind = "absence"\nwindow = "tumbling_1m"\n'
    with pytest.raises(RuleError, match="rule 'quiet': field 'event_types': an absence rule must list"):
        parse_rules(text, WINDOWS)


def test_settings_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD + "for = -1\n")
    with pytest.raises(SettingsError) as caught:
        load({"ALERT_RULES": str(path)})
    assert str(caught.value).startswith(f"ALERT_RULES: {path}: rule 'error_spike': field 'for':")
    with pytest.raises(SettingsError, match="cannot read the rules file"):
        load({"ALERT_RULES": str(tmp_path / "missing.toml")})
    with pytest.raises(SettingsError, match="TOPIC_ALERTS must differ"):
        load({"TOPIC_ALERTS": "events"})


def test_a_malformed_rules_file_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(GOOD.replace('op = ">"', 'op = "=="'))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("F_", "FAUST_"))}
    env.update(PYTHONPATH=str(ROOT), ALERT_RULES=str(path))
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "worker"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [f"error: invalid setting ALERT_RULES: {path}: rule 'error_spike': field 'op': expected one of "
                     ">, >=, <, <= (got '==')"], done.stderr
