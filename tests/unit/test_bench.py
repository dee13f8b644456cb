"""The bench's own arithmetic: a codec's bytes on the wire, and the status of several workers."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from aggregations.spec import SpecError
from bench.__main__ import (
    BASE_MS,
    CODECS,
    ROOT,
    article_rows,
    combined_status,
    event_ms,
    generator,
    hammer_comparison,
    wire_bytes_per_event,
)
from bench.__main__ import main as bench_main
from bench.hammer import HammerReport
from bench.soak import CLOSE_POLL_S, SAMPLE_S, STARTUP_ALLOWANCE_S, Drain, generator_shortfall, wait_for_close
from bench.spec import KeyShape, Recording, Reference, parse_field_keys
from commands.loadgen import SpecEventGenerator


def test_uncompressed_wire_bytes_are_the_records_plus_batch_overhead() -> None:
    source = generator()
    records = [source.record(event_ms(index)) for index in range(4_000)]
    payload = sum(len(key) + len(value) for key, value, _, _ in records) / len(records)
    measured = wire_bytes_per_event("none", 4_000)
    # Each record adds ~10 bytes of lengths, deltas and attributes; each batch a 61-byte header.
    assert payload + 5 < measured < payload + 16


@pytest.mark.parametrize("codec", sorted(set(CODECS) - {"none"}))
def test_every_codec_the_settings_offer_compresses_the_events(codec: str) -> None:
    assert wire_bytes_per_event(codec, 4_000) < wire_bytes_per_event("none", 4_000) / 2


@pytest.mark.parametrize("event_types", [None, 500])
def test_a_run_of_the_article_job_waits_for_one_row_per_window_and_type_with_events(event_types: int | None) -> None:
    # 5 s of event time from a minute's start: one tumbling and two hopping instances, each with every type.
    assert article_rows(5_000, event_types) == 3 * (event_types or 3)


def test_several_workers_add_up_and_report_the_worst_delay() -> None:
    statuses = [json.loads(text) for text in (
        '{"consumed_total": 10, "archive_buffered": 1, "windows_exported": 3, "rows_exported": 30, '
        '"export_delay_ms": {"p50": 5, "p99": 9}}',
        '{"consumed_total": 4, "archive_buffered": 0, "windows_exported": 2, "rows_exported": 4, '
        '"export_delay_ms": {"p50": null, "p99": null}}',
        '{"consumed_total": 1, "archive_buffered": 2, "windows_exported": 0, "rows_exported": 0, '
        '"export_delay_ms": {"p50": 7, "p99": 8}}',
    )]
    assert combined_status(statuses) == {"consumed_total": 15, "archive_buffered": 3, "windows_exported": 5,
                                         "rows_exported": 34, "export_delay_ms": {"p50": 7, "p99": 9}}
    none = combined_status(statuses[1:2])
    assert none["export_delay_ms"] == {"p50": None, "p99": None}


def test_a_soak_whose_generator_kept_its_rate_has_no_shortfall() -> None:
    assert generator_shortfall(50_000, 600, 600 + STARTUP_ALLOWANCE_S + SAMPLE_S) is None
    assert generator_shortfall(50_000, 600, 604.0) is None


def test_a_soak_whose_generator_fell_behind_its_rate_says_so() -> None:
    # 30M events at 50,000/s asked; one process on a slow day sent them at ~29,000/s.
    assert generator_shortfall(50_000, 600, 1_034) == (
        "the load generator took 1034 s for 30000000 events, ~29014 events/s: the run does not test 50000/s")


class _Polls:
    """A worker's answers, one per poll (the last one repeated), on a clock that each sleep advances."""

    def __init__(self, *answers: Drain | None) -> None:
        self.answers, self.now, self.reads = list(answers), 0.0, 0

    def read(self) -> Drain | None:
        self.reads += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _wait(polls: _Polls, produced: int = 100, timeout_s: float = 30.0) -> str | None:
    return wait_for_close(polls.read, produced, timeout_s=timeout_s, clock=lambda: polls.now, sleep=polls.sleep)


def test_the_soak_ends_once_everything_is_consumed_and_no_window_is_open_twice_in_a_row() -> None:
    polls = _Polls(None, Drain(90, 3, 6), Drain(100, 3, 2), Drain(100, 5, 0), Drain(100, 6, 0), Drain(100, 6, 0))
    assert _wait(polls) is None
    assert polls.reads == 6  # not at the first empty poll: an export came after it
    assert polls.now == 5 * CLOSE_POLL_S


def test_a_window_still_open_at_the_deadline_fails_the_soak() -> None:
    polls = _Polls(Drain(100, 4, 3))
    assert _wait(polls, timeout_s=30.0) == "3 window rows still open 30 s after the producer stopped"
    assert polls.now == 30.0


def test_events_not_consumed_or_a_silent_worker_fail_the_soak() -> None:
    assert _wait(_Polls(Drain(99, 4, 0))) == "consumed 99 of 100 events 30 s after the producer stopped"
    assert _wait(_Polls(None)) == "the worker did not answer in the 30 s after the producer stopped"


def test_a_key_shape_spaces_the_events_and_the_reference_counts_each_window_instance() -> None:
    shape = KeyShape.load(ROOT / "deploy" / "aggregations" / "iot.toml", keys=2, events_per_key=1)
    assert [shape.event_ms(BASE_MS, i) - BASE_MS for i in range(5)] == [0, 30_000, 60_000, 90_000, 120_000]
    reference = Reference(shape.spec)
    source = Recording(SpecEventGenerator(shape.spec, keys=2, seed=1), reference)
    records = [source.record(shape.event_ms(BASE_MS, i)) for i in range(4)]
    temps = [r.counted[0].measures[0] for r in records]
    # Keys 0, 1, 0, 1 at 0 s, 30 s, 60 s, 90 s: two tumbling minutes of two keys each; hopping windows
    # from -30 s to 90 s holding events {0}, {0, 1}, {1, 2}, {2, 3}, {3}.
    hopping_sum = sum(temps) * 2
    assert reference.totals() == {
        ("devices", "tumbling_1m"): (4, 4, sum(temps)), ("devices", "hopping_1m"): (8, 8, hopping_sum),
        ("sites", "tumbling_1m"): (4, 4, sum(temps)), ("sites", "hopping_1m"): (8, 8, hopping_sum)}


def test_a_key_shape_can_give_a_key_field_fewer_values() -> None:
    shape = KeyShape.load(ROOT / "deploy" / "aggregations" / "iot.toml", keys=4, events_per_key=1,
                          field_keys=parse_field_keys(["device.site=1"]))
    reference = Reference(shape.spec)
    source = Recording(shape.generator(seed=1), reference)
    for i in range(4):
        source.record(shape.event_ms(BASE_MS, i))
    totals = reference.totals()
    # One minute of 4 devices in 1 site: 4 device rows and 1 site row in the tumbling window.
    assert totals[("devices", "tumbling_1m")][:2] == (4, 4) and totals[("sites", "tumbling_1m")][:2] == (1, 4)
    with pytest.raises(SpecError, match="device.name is not a key field of the spec"):
        KeyShape.load(ROOT / "deploy" / "aggregations" / "iot.toml", keys=4, events_per_key=1,
                      field_keys=(("device.name", 2),))
    for bad in (["device.site"], ["device.site=x"], ["=3"], ["device.site=1", "device.site=2"]):
        with pytest.raises(ValueError, match="each is a key field's path, =, and its number of values"):
            parse_field_keys(bad)


def test_the_articles_spec_is_measured_as_the_articles_job() -> None:
    with pytest.raises(SpecError, match="it is the article's job.*--event-types N"):
        KeyShape.load(ROOT / "deploy" / "aggregations" / "article.toml", keys=2, events_per_key=1)


def test_the_hammered_runs_are_compared_with_the_others() -> None:
    def run(events_per_s: int, p99: int | None, requests: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = {"events_per_s": events_per_s, "export_delay_p99_ms": p99}
        if requests is not None:
            result["hammer"] = {"clients": 50, "requests": requests, "by_status": {"200": requests}}
        return result

    results = [run(100, 400), run(90, 440, 1000), run(110, 380), run(95, 500, 1200), run(105, 420),
               run(80, None, 900)]
    assert hammer_comparison(results) == {
        "clients": 50, "requests": [1000, 1200, 900], "by_status": [{"200": 1000}, {"200": 1200}, {"200": 900}],
        "events_per_s": {"without": 105, "with": 90, "ratio": 0.857},
        "export_delay_p99_ms": {"without": 400, "with": 440, "ratio": 1.1}}


def test_a_hammer_report_sums_up() -> None:
    report = HammerReport(clients=2, seconds=2.0, by_status=Counter({"200": 3, "503": 1}),
                          latencies_ms=[5.0, 1.0, 3.0, 100.0])
    assert report.summary() == {"clients": 2, "seconds": 2.0, "requests": 4, "requests_per_s": 2,
                                "by_status": {"200": 3, "503": 1}, "p50_ms": 5.0, "p99_ms": 100.0}
    assert HammerReport(clients=1).summary()["p99_ms"] is None


@pytest.mark.parametrize("argv", [["--hammer", "50", "--runs", "1"], ["--hammer", "201", "--runs", "2"],
                                  ["--hammer", "-1"]])
def test_the_hammer_needs_runs_to_alternate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        bench_main(argv)
    assert raised.value.code == 2 and "--hammer must be from 0 to 200" in capsys.readouterr().err
