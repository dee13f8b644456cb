"""Aggregation specs (aggregations/spec.py) and the judgement of events against them (judge.py):
every spec error in one line naming the aggregation and the field, every dead-letter reason at run
time, and the shipped example specs on the events they are written for."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import aggregations.judge as judge_module
from aggregations.judge import MISSING, Counted, Judgement, SpecJudge, event_time, judge, judge_object, lookup
from aggregations.spec import Spec, SpecError, TimeField, field_path, parse_spec
from formats.events import (
    BAD_STRING,
    BAD_TIMESTAMP,
    INVALID_JSON,
    MAX_STRING_CHARS,
    MISSING_FIELD,
    NON_FINITE_VALUE,
    NOT_AN_OBJECT,
    OVERSIZED,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    Rejection,
    iso_to_epoch_ms,
)
from settings import SettingsError, load

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "aggregations"
WINDOWS = ("tumbling_1m", "hopping_1m")
LIMITS = {"min_event_ms": 946_684_800_000, "max_event_ms": 4_102_444_800_000}  # 2000 to 2100
T_MS = 1_733_480_000_000  # 2024-12-06T10:13:20Z


def _spec(body: str, time: str = '[time]\nfield = "ts"\nformat = "epoch_ms"\n') -> Spec:
    return parse_spec(time + body, WINDOWS)


def _judged(spec: Spec, event: object) -> Judgement | Rejection:
    return judge(orjson.dumps(event), spec, max_bytes=65_536, **LIMITS)


AGG = '[[aggregation]]\nname = "a"\nkey = ["k"]\nmeasures = ["m"]\n'


# -- the spec ---------------------------------------------------------------------------------------


def test_a_full_spec_parses_with_its_defaults() -> None:
    spec = _spec(AGG + '''
[[aggregation]]
name = "b-2"
key = ["page.path", "country", "flag:bool", "n:int"]
missing_key = "null"
measures = ["x.y", "z"]
missing_measure = "skip"
where = { country = ["DE", "FR"], "page.kind" = "product", n = 3, flag = true }
distinct = ["uid"]
windows = ["hopping_1m"]
redis = "latest"
''')
    a, b = spec.aggregations
    assert spec.time == TimeField(field_path("ts"), "epoch_ms")
    assert (a.missing_key, a.missing_measure, a.redis, a.windows, a.where, a.distinct) == (
        "dead_letter", "dead_letter", "every", WINDOWS, (), ())
    assert [(p.path.text, p.type) for p in b.key] == [("page.path", "string"), ("country", "string"),
                                                      ("flag", "bool"), ("n", "int")]
    assert [(c.path.text, c.values) for c in b.where] == [("country", ("DE", "FR")), ("page.kind", ("product",)),
                                                           ("n", (3,)), ("flag", (True,))]
    assert b.windows == ("hopping_1m",) and b.redis == "latest"
    assert b.columns() == ["page_path", "country", "flag", "n", "x_y_count", "x_y_sum", "x_y_min", "x_y_max",
                           "x_y_mean", "z_count", "z_sum", "z_min", "z_max", "z_mean"]


@pytest.mark.parametrize(("text", "message"), [
    ("time = 3\n" + AGG, "[time]: expected a table"),
    ('[time]\nfield = "ts"\nformat = "epoch_ns"\n' + AGG, "[time]: field 'format': expected one of iso8601"),
    ('[time]\nfield = "a..b"\nformat = "iso8601"\n' + AGG, "[time]: field 'field': expected a field path"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\nzone = "UTC"\n' + AGG, "[time]: unknown field 'zone'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n', "expected one or more [[aggregation]] tables"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[rollups]\nx = 1\n' + AGG, "unknown top-level key 'rollups'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "Bad Name"\nkey = ["k"]\nmeasures = ["m"]\n',
     "aggregation #1: field 'name': expected 1 to 63 characters"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + AGG, "aggregation 'a': field 'name': another aggregation"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'colour = "red"\n', "aggregation 'a': field 'colour': "
                                                                             "unknown field"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = []\nmeasures = ["m"]\n',
     "aggregation 'a': field 'key': expected a list of 1 to 4 field paths"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["a", "b", "c", "d", "e"]\n'
     'measures = ["m"]\n', "aggregation 'a': field 'key': expected a list of 1 to 4"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["k"]\n',
     "aggregation 'a': field 'measures': expected a list of 1 to 8 field paths (got None)"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["k", "k"]\nmeasures = ["m"]\n',
     "aggregation 'a': field 'key': a field path is listed twice"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["a.b"]\nmeasures = ["a_b"]\n'
     'missing_measure = "skip"\n', None),  # key column a_b, measure columns a_b_count...: no clash
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["a.b", "a_b"]\n'
     'measures = ["m"]\n', "aggregation 'a': field 'key': its rows would have the column 'a_b' twice"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["window"]\nmeasures = ["m"]\n',
     "aggregation 'a': field 'key': its rows would have the column 'window'"),
    # The rollups' columns too: a distinct field's, a percentile's, and the reserved events and period.
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["u_distinct"]\n'
     'measures = ["m"]\ndistinct = ["u"]\n',
     "aggregation 'a': field 'key': its rows would have the column 'u_distinct'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["m_p95"]\nmeasures = ["m"]\n',
     "aggregation 'a': field 'key': its rows would have the column 'm_p95'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n[[aggregation]]\nname = "a"\nkey = ["events"]\nmeasures = ["m"]\n',
     "aggregation 'a': field 'key': its rows would have the column 'events'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'missing_key = "drop"\n',
     "aggregation 'a': field 'missing_key': expected one of dead_letter, skip, null (got 'drop')"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'missing_measure = "null"\n',
     "aggregation 'a': field 'missing_measure': expected one of dead_letter, skip"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'redis = "some"\n',
     "aggregation 'a': field 'redis': expected one of every, latest, off"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'windows = ["daily"]\n',
     "aggregation 'a': field 'windows': expected a list of distinct names of the WINDOWS setting, tumbling_1m, "
     "hopping_1m"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'windows = []\n', "aggregation 'a': field 'windows'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'where = { k = 1.5 }\n',
     "aggregation 'a': field 'where': 'k': expected a string, an integer, a boolean or a list"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'where = { k = [] }\n',
     "aggregation 'a': field 'where': 'k'"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'where = { "a b" = 1 }\n',
     "aggregation 'a': field 'where': expected a field path"),
    ('[time]\nfield = "ts"\nformat = "iso8601"\n' + AGG + 'distinct = "uid"\n',
     "aggregation 'a': field 'distinct': expected a list of 0 to 4 field paths"),
    ("not toml = [", "not valid TOML"),
])
def test_every_spec_error_names_the_aggregation_and_the_field(text: str, message: str | None) -> None:
    if message is None:
        parse_spec(text, WINDOWS)
        return
    with pytest.raises(SpecError) as caught:
        parse_spec(text, WINDOWS)
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_field_paths() -> None:
    assert field_path("device.id").names == ("device", "id") and field_path("@ts").column == "@ts"
    for bad in ("", ".", "a.", "a..b", "a b", "é", "x" * 65, ".".join("a" * 9), 3, None):
        with pytest.raises(ValueError):
            field_path(bad)


# -- the event's time -------------------------------------------------------------------------------


@pytest.mark.parametrize(("time_format", "value", "expected"), [
    ("epoch_ms", T_MS, T_MS),
    ("epoch_us", T_MS * 1000 + 999, T_MS),
    ("epoch_us", -1, -1),  # floored, like every format
    ("epoch_s", 1_733_480_000, T_MS),
    ("epoch_s", 1_733_480_000.123, T_MS + 123),  # the number's text, not the float times 1000 (…122.99)
    ("epoch_s", 1_733_480_000.1239, T_MS + 123),
    ("epoch_s", -0.0005, -1),
    ("iso8601", "2024-12-06T10:13:20Z", T_MS),
    ("iso8601", "2024-12-06T11:13:20.5+01:00", T_MS + 500),
    ("iso8601", "2024-12-06T10:13:20", T_MS),  # no zone: UTC
    ("epoch_ms_or_iso8601", T_MS, T_MS),
    ("epoch_ms_or_iso8601", "2024-12-06T10:13:20Z", T_MS),
])
def test_every_time_format(time_format: str, value: object, expected: int) -> None:
    assert event_time(value, TimeField(field_path("t"), time_format)) == expected


@pytest.mark.parametrize(("time_format", "value", "reason"), [
    ("epoch_ms", MISSING, MISSING_FIELD),
    ("epoch_ms", None, MISSING_FIELD),
    ("epoch_ms", 1.5, WRONG_TYPE),  # milliseconds are whole: a float is ambiguous
    ("epoch_ms", True, WRONG_TYPE),
    ("epoch_ms", "1733480000000", WRONG_TYPE),
    ("epoch_us", 1.0, WRONG_TYPE),
    ("epoch_s", "1733480000", WRONG_TYPE),
    ("iso8601", T_MS, WRONG_TYPE),
    ("iso8601", "yesterday", BAD_TIMESTAMP),
    ("epoch_ms_or_iso8601", [T_MS], WRONG_TYPE),
    ("epoch_ms_or_iso8601", "12:00", BAD_TIMESTAMP),
])
def test_a_bad_time_is_a_dead_letter_with_its_reason(time_format: str, value: object, reason: str) -> None:
    rejection = event_time(value, TimeField(field_path("t"), time_format))
    assert isinstance(rejection, Rejection) and rejection.reason == reason and "t " in rejection.detail + " "


@settings(max_examples=300, deadline=None)
@given(ms=st.integers(-10**15, 10**15))
def test_the_time_formats_agree(ms: int) -> None:
    fields = {"epoch_ms": ms, "epoch_us": ms * 1000 + 7, "epoch_s": ms / 1000 if ms % 1000 == 0 else None}
    for time_format, value in fields.items():
        if value is not None:
            assert event_time(value, TimeField(field_path("t"), time_format)) == ms


def test_iso_times_floor_to_the_millisecond_like_the_default_jobs() -> None:
    for text in ("2026-12-06T10:00:00.1239+01:00", "1969-12-31T23:59:59.9995Z"):
        assert event_time(text, TimeField(field_path("t"), "iso8601")) == iso_to_epoch_ms(text)


# -- a whole event ----------------------------------------------------------------------------------


def test_whole_record_rejections() -> None:
    spec = _spec(AGG)
    assert judge(b"x" * 70_000, spec, max_bytes=65_536, **LIMITS).reason == OVERSIZED  # type: ignore[union-attr]
    assert judge(b"{nope", spec, max_bytes=65_536, **LIMITS).reason == INVALID_JSON  # type: ignore[union-attr]
    assert _judged(spec, [1, 2]).reason == NOT_AN_OBJECT  # type: ignore[union-attr]
    assert _judged(spec, {"k": "a", "m": 1}).reason == MISSING_FIELD  # type: ignore[union-attr]
    assert _judged(spec, {"ts": 5, "k": "a", "m": 1}).reason == TIMESTAMP_OUT_OF_RANGE  # type: ignore[union-attr]


def test_key_parts_measures_and_their_policies_per_aggregation() -> None:
    spec = _spec('''
[[aggregation]]
name = "strict"
key = ["k.a", "k.b:int"]
measures = ["m.x", "m.y"]

[[aggregation]]
name = "lenient"
key = ["k.a", "k.b:int"]
missing_key = "null"
measures = ["m.x", "m.y"]
missing_measure = "skip"

[[aggregation]]
name = "skipping"
key = ["k.b:int"]
missing_key = "skip"
measures = ["m.x"]
''')
    whole = {"ts": T_MS, "k": {"a": "x", "b": 7}, "m": {"x": 1, "y": 2.5}}
    assert _judged(spec, whole) == Judgement(T_MS, (Counted(("x", 7), (1.0, 2.5)),) * 2 + (Counted((7,), (1.0,)),))
    partial = {"ts": T_MS, "k": {"a": "y"}, "m": {"x": -0.5, "y": None}}
    strict, lenient, skipping = _judged(spec, partial).results  # type: ignore[union-attr]
    assert isinstance(strict, Rejection) and strict.reason == MISSING_FIELD
    assert strict.detail == "k.b is missing (aggregation strict)"
    assert lenient == Counted(("y", None), (-0.5, None))  # the event still counts in the others
    assert skipping is None


@pytest.mark.parametrize(("key", "measure", "reason"), [
    (1.5, 1, WRONG_TYPE),  # a float is no key part
    ({"nested": 1}, 1, WRONG_TYPE),
    ([1], 1, WRONG_TYPE),
    (2**64, 1, WRONG_TYPE),  # beyond 64 bits (orjson reads it as a float, and so does any key)
    ("", 1, BAD_STRING),
    ("a\nb", 1, BAD_STRING),
    ("x" * 257, 1, BAD_STRING),
    ("k", "1", WRONG_TYPE),
    ("k", True, WRONG_TYPE),
    ("k", 10**400, INVALID_JSON),  # orjson refuses the document
])
def test_a_bad_key_part_or_measure_is_a_dead_letter_for_its_aggregation(key: object, measure: object,
                                                                        reason: str) -> None:
    spec = _spec(AGG + '[[aggregation]]\nname = "other"\nkey = ["o"]\nmeasures = ["p"]\n')
    try:
        raw = orjson.dumps({"ts": T_MS, "k": key, "m": measure, "o": "fine", "p": 1})
    except TypeError:  # an integer orjson cannot write: the document by hand
        raw = f'{{"ts": {T_MS}, "k": {key!r}, "m": {measure!r}, "o": "fine", "p": 1}}'.replace("'", '"').encode()
    judged = judge(raw, spec, max_bytes=65_536, **LIMITS)
    if reason == INVALID_JSON:
        assert isinstance(judged, Rejection) and judged.reason == INVALID_JSON
        return
    assert isinstance(judged, Judgement)
    mine, other = judged.results
    assert isinstance(mine, Rejection) and mine.reason == reason, mine
    assert other == Counted(("fine",), (1.0,))


def test_a_non_finite_measure_from_a_more_permissive_parser_is_a_dead_letter() -> None:
    spec = _spec(AGG)
    for value in (math.inf, math.nan, 10**400):
        judged = judge_object({"ts": T_MS, "k": "a", "m": value}, spec, **LIMITS)
        assert isinstance(judged, Judgement) and judged.results[0].reason == NON_FINITE_VALUE  # type: ignore[union-attr]


def test_a_key_part_is_of_its_declared_type() -> None:
    spec = _spec(AGG.replace('key = ["k"]', 'key = ["k", "n:int", "b:bool"]'))
    for values, wrong in ((("a", 1, True), None), (("a", "1", True), "n must be an integer, got str"),
                          (("a", True, True), "n must be an integer, got bool"),
                          (("a", 1, 1), "b must be a boolean, got int"), ((1, 1, True), "k must be a string, got int")):
        judged = _judged(spec, {"ts": T_MS, "k": values[0], "n": values[1], "b": values[2], "m": 1})
        result = judged.results[0]  # type: ignore[union-attr]
        if wrong is None:
            assert result == Counted(values, (1.0,))
        else:
            assert isinstance(result, Rejection) and (result.reason, result.detail) == (WRONG_TYPE, wrong)
    with pytest.raises(SpecError, match="expected a type of string, int, bool after ':'"):
        _spec(AGG.replace('key = ["k"]', 'key = ["k:float"]'))


def test_where_is_strict_about_types_and_never_a_dead_letter() -> None:
    spec = _spec(AGG + 'where = { "c.d" = ["x", 1, true] }\n')
    for value, counted in (("x", True), (1, True), (True, True), ("1", False), (1.0, False), (False, False),
                           (None, False)):
        judged = _judged(spec, {"ts": T_MS, "k": "a", "m": 1, "c": {"d": value}})
        assert isinstance(judged, Judgement)
        assert (judged.results[0] is not None) == counted, value
    assert _judged(spec, {"ts": T_MS, "k": "a", "m": 1}).results == (None,)  # type: ignore[union-attr]


def test_lookup_walks_objects_only() -> None:
    event = {"a": {"b": {"c": 0}}, "l": [{"b": 1}], "s": "text"}
    assert lookup(event, field_path("a.b.c")) == 0
    for path in ("a.x", "a.b.c.d", "l.b", "s.length", "z"):
        assert lookup(event, field_path(path)) is MISSING


# -- the shipped specs ------------------------------------------------------------------------------


def _shipped(name: str) -> Spec:
    return parse_spec((DEPLOY / f"{name}.toml").read_text(), WINDOWS)


def test_the_shipped_specs_parse_and_take_the_events_they_are_written_for() -> None:
    assert {path.stem for path in DEPLOY.glob("*.toml")} == {"article", "clickstream", "iot"}
    article = _shipped("article")
    assert _judged(article, {"user_id": "u1", "event_type": "click", "timestamp": T_MS, "value": 2}) == Judgement(
        T_MS, (Counted(("click",), (2.0,), ("u1",)),))
    assert _judged(article, {"event_type": "click", "timestamp": T_MS, "value": 2}).results[0].reason == (  # type: ignore[union-attr]
        MISSING_FIELD)

    clicks = _shipped("clickstream")
    event = {"uid": "u1", "page": {"path": "/cart"}, "country": "DE", "ts": 1733480000, "ms_on_page": 5120}
    assert _judged(clicks, event) == Judgement(T_MS, (Counted(("/cart", "DE"), (5120.0,), ("u1",)),
                                                      Counted(("u1",), (5120.0,)), Counted(("/cart",), (5120.0,))))
    no_country = {**event, "page": {"path": "/home"}, "country": None}
    assert _judged(clicks, no_country).results == (Counted(("/home", None), (5120.0,), ("u1",)),  # type: ignore[union-attr]
                                                   Counted(("u1",), (5120.0,)), None)

    iot = _shipped("iot")
    reading = {"device": {"id": "d-17", "site": "berlin"}, "metrics": {"temp": 21.5, "hum": 40.2},
               "time": "2026-12-06T10:00:00.123+01:00"}
    at_ms = iso_to_epoch_ms("2026-12-06T09:00:00.123Z")
    assert _judged(iot, reading) == Judgement(at_ms, (Counted(("d-17",), (21.5, 40.2)),  # type: ignore[arg-type]
                                                      Counted(("berlin",), (21.5,))))
    no_humidity = {**reading, "metrics": {"temp": 20}}
    assert _judged(iot, no_humidity).results == (Counted(("d-17",), (20.0, None)),  # type: ignore[union-attr]
                                                 Counted(("berlin",), (20.0,)))


def test_the_aggregations_setting_loads_a_spec_or_names_its_problem(tmp_path: Path) -> None:
    assert load({}).pipeline.spec is None
    spec = load({"AGGREGATIONS": str(DEPLOY / "iot.toml")}).pipeline.spec
    assert spec is not None and [a.name for a in spec.aggregations] == ["devices", "sites"]
    path = tmp_path / "spec.toml"
    path.write_text('[time]\nfield = "ts"\nformat = "epoch_ms"\n' + AGG + 'missing_measure = "maybe"\n')
    with pytest.raises(SettingsError) as caught:
        load({"AGGREGATIONS": str(path)})
    assert str(caught.value) == (f"AGGREGATIONS: {path}: aggregation 'a': field 'missing_measure': expected one of "
                                 "dead_letter, skip (got 'maybe')")
    with pytest.raises(SettingsError, match="^AGGREGATIONS: cannot read the spec"):
        load({"AGGREGATIONS": str(tmp_path / "missing.toml")})
    # An aggregation's folder in the lake would be a window's or a rollup's.
    for taken in ("tumbling_1m", "hourly", "daily"):
        path.write_text('[time]\nfield = "ts"\nformat = "epoch_ms"\n' + AGG.replace('"a"', f'"{taken}"'))
        with pytest.raises(SettingsError, match=f"aggregation '{taken}': field 'name': a window's or the batch"):
            load({"AGGREGATIONS": str(path)})
    # With a spec, alert rules name its aggregations (the article's rules do not).
    with pytest.raises(SettingsError, match="field 'aggregation': expected one of the spec's aggregations"):
        load({"AGGREGATIONS": str(DEPLOY / "iot.toml"),
              "ALERT_RULES": str(DEPLOY.parent / "alerts" / "rules.example.toml")})


def test_a_copy_of_the_articles_spec_is_the_articles_job(tmp_path: Path) -> None:
    """deploy/aggregations/article.toml, or any text that parses to it, gives the settings of no spec at all
    (so the worker, the batch layer and the web API run the article's job, byte for byte); a spec that
    differs in anything, even the aggregation's name or its Redis output, is a spec."""
    assert load({"AGGREGATIONS": str(DEPLOY / "article.toml")}) == load({})
    windows = "tumbling_1m:60s,hopping_5m:5m:1m"
    assert load({"AGGREGATIONS": str(DEPLOY / "article.toml"), "WINDOWS": windows}) == load({"WINDOWS": windows})
    assert load({"AGGREGATIONS": str(DEPLOY / "article.toml"),
                 "ALERT_RULES": str(DEPLOY.parent / "alerts" / "rules.example.toml")}).pipeline.spec is None
    text = (DEPLOY / "article.toml").read_text(encoding="utf-8")
    path = tmp_path / "copy.toml"
    path.write_text("# the same job, written otherwise\n" + text.replace('key = ["event_type"]',
                                                                         'key = ["event_type:string"]'))
    assert load({"AGGREGATIONS": str(path)}).pipeline.spec is None
    for change in [('name = "events"', 'name = "types"'), ('distinct = ["user_id"]', ""),
                   ('measures = ["value"]', 'measures = ["value"]\nredis = "latest"'),
                   ('measures = ["value"]', 'measures = ["value"]\nwindows = ["tumbling_1m"]'),
                   ('format = "epoch_ms_or_iso8601"', 'format = "epoch_ms"')]:
        path.write_text(text.replace(*change))
        assert load({"AGGREGATIONS": str(path)}).pipeline.spec is not None, change


def test_a_bad_spec_stops_the_worker_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "spec.toml"
    path.write_text('[time]\nfield = "ts"\nformat = "epoch_ms"\n' + AGG.replace('["k"]', '["k:float"]'))
    root = DEPLOY.parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("F_", "FAUST_"))}
    env.update(PYTHONPATH=str(root), AGGREGATIONS=str(path))
    done = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "worker"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: invalid setting AGGREGATIONS: {path}: {_spec_error(path.read_text())}"], done.stderr


def _spec_error(text: str) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(text, WINDOWS)
    return str(caught.value)


# -- SpecJudge: the rules' judgement, quickly -------------------------------------------------------

EVERY_FEATURE = """
[[aggregation]]
name = "a"
key = ["k", "n:int"]
measures = ["m", "x.y"]
missing_measure = "skip"
distinct = ["u"]

[[aggregation]]
name = "b"
key = ["k", "f:bool"]
missing_key = "null"
measures = ["m"]
where = { k = ["a", "b"], n = [1, true] }

[[aggregation]]
name = "c"
key = ["u"]
missing_key = "skip"
measures = ["x.y"]
where = { f = true }
"""

any_value = st.one_of(
    st.sampled_from(["a", "b", "", "a" * MAX_STRING_CHARS, "a" * (MAX_STRING_CHARS + 1), "tab\there", "\x7f", "é",
                     "2024-12-06T10:13:20Z", "2024-12-06T11:13:20.5+01:00", "noon", "1733480000"]),
    st.text(max_size=4),
    st.none(), st.booleans(),
    st.sampled_from([0, 1, -1, 2**63 - 1, -2**63, 2**63, 2**64 + 1, T_MS, T_MS * 1000]),
    st.integers(),
    st.sampled_from([0.0, -0.0, 0.25, -7.5, 1e300, 1_733_480_000.123, 1_733_480_000.0, 1e16, 5e-324]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.just([1]), st.just({"y": 2.5}),
)
_ABSENT = object()
_TIMES = {"iso8601": st.sampled_from(["2024-12-06T10:13:20Z", "2024-12-06T11:13:20.5+01:00"]),
          "epoch_s": st.sampled_from([1_733_480_000, 1_733_480_000.123, 1_733_480_000.1239, 1_733_480_000.5]),
          "epoch_ms": st.just(T_MS), "epoch_us": st.just(T_MS * 1000 + 7)}
_TIMES["epoch_ms_or_iso8601"] = st.one_of(_TIMES["iso8601"], _TIMES["epoch_ms"])


def _document(time_format: str) -> st.SearchStrategy[dict[str, object]]:
    """Events whose fields are each mostly of the spec's type (so that all of them often are, and the
    quick path decides), else missing or any value; "x" and "t" objects holding the nested field."""
    def field(valid: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return mostly(valid, st.one_of(st.just(_ABSENT), any_value))

    def mostly(usual: st.SearchStrategy[object], other: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
        return st.integers(0, 9).flatmap(lambda i: usual if i < 9 else other)

    fields = st.fixed_dictionaries({
        "k": field(st.sampled_from(["a", "b", "c"])), "n": field(st.sampled_from([1, 2, -2**63])),
        "f": field(st.booleans()), "m": field(st.sampled_from([2, 0.5, -0.0, 1e300])),
        "u": field(st.sampled_from(["u1", "u2"])),
        "x": mostly(st.fixed_dictionaries({"y": field(st.sampled_from([0.25, -0.0, 7]))}), any_value),
        "t": mostly(st.fixed_dictionaries({"at": field(_TIMES[time_format])}), any_value),
    })
    return fields.map(lambda d: {name: value if not isinstance(value, dict) else
                                 {k: v for k, v in value.items() if v is not _ABSENT}
                                 for name, value in d.items() if value is not _ABSENT})


@pytest.mark.parametrize("time_format", ["iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ms_or_iso8601"])
@settings(max_examples=200, deadline=None)
@given(data=st.data(), raw=st.one_of(st.none(), st.none(), st.binary(max_size=8)))
def test_the_spec_judge_is_the_rules_judgement(time_format: str, data: st.DataObject, raw: bytes | None) -> None:
    spec = _spec(EVERY_FEATURE, f'[time]\nfield = "t.at"\nformat = "{time_format}"\n')
    event = data.draw(_document(time_format))
    text = json.dumps(event).encode() if raw is None else raw  # json: integers beyond 64 bits too
    for max_bytes in (65_536, 40):
        want = judge(text, spec, max_bytes=max_bytes, **LIMITS)
        got = SpecJudge(spec).judge(text, max_bytes=max_bytes, **LIMITS)
        assert repr(got) == repr(want)  # repr: == would take -0.0 for 0.0


def test_the_spec_judge_decides_the_common_case_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """The quick path is taken (so the test above compares two paths, not one)."""
    spec = _spec(EVERY_FEATURE, '[time]\nfield = "t.at"\nformat = "epoch_s"\n')
    quick = SpecJudge(spec)
    monkeypatch.setattr("aggregations.judge.judge_object", None)  # the rules, unreachable from the quick path
    event = {"k": "a", "n": 1, "f": True, "m": 2, "u": "u1", "x": {"y": -0.0}, "t": {"at": 1_733_480_000.5}}
    assert quick.judge(orjson.dumps(event), max_bytes=65_536, **LIMITS) == Judgement(T_MS + 500, (
        Counted(("a", 1), (2.0, -0.0), ("u1",)), Counted(("a", True), (2.0,)), Counted(("u1",), (-0.0,))))


_EPOCH_S = TimeField(field_path("t"), "epoch_s")


@settings(max_examples=3000)
@given(st.one_of(
    st.integers(0, 10**13).map(lambda ms: ms / 1000),  # a time written with up to 3 decimals, as the usual event
    st.floats(0, 2e12, allow_nan=False), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-10**15, 10**15).map(lambda us: us / 1_000_000), st.integers(-10**20, 10**20)))
def test_the_quick_seconds_are_the_rules_seconds(seconds: float) -> None:
    """SpecJudge's epoch_s (the float times 1000 when it is exact, else the number's text) gives the rules' time,
    or leaves the number to the rules."""
    quick = judge_module._seconds_to_ms(seconds)
    if quick is not None:
        assert quick == event_time(seconds, _EPOCH_S)


def test_a_time_in_seconds_is_read_from_its_text_not_from_the_float() -> None:
    # 1733480000.123 * 1000 is 1733480000122.9998: the rules floor the text's value, 1733480000123.
    for seconds, ms in [(1_733_480_000.123, T_MS + 123), (1_733_480_000.1239, T_MS + 123), (0.001, 1), (1.005, 1005),
                        (999_999_999_999.999, 999_999_999_999_999), (1e12 + 0.5, 10**15 + 500), (-0.0, 0)]:
        assert judge_module._seconds_to_ms(seconds) == ms == event_time(seconds, _EPOCH_S)
