"""The bench's own arithmetic: a codec's bytes on the wire, and the status of several workers."""

from __future__ import annotations

import json

import pytest

from bench.__main__ import CODECS, combined_status, event_ms, generator, wire_bytes_per_event
from bench.soak import SAMPLE_S, STARTUP_ALLOWANCE_S, generator_shortfall


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


def test_several_workers_add_up_and_report_the_worst_delay() -> None:
    statuses = [json.loads(text) for text in (
        '{"consumed_total": 10, "archive_buffered": 1, "windows_exported": 3, "export_delay_ms": {"p50": 5, "p99": 9}}',
        '{"consumed_total": 4, "archive_buffered": 0, "windows_exported": 2, "export_delay_ms": {"p50": null, '
        '"p99": null}}',
        '{"consumed_total": 1, "archive_buffered": 2, "windows_exported": 0, "export_delay_ms": {"p50": 7, "p99": 8}}',
    )]
    assert combined_status(statuses) == {"consumed_total": 15, "archive_buffered": 3, "windows_exported": 5,
                                         "export_delay_ms": {"p50": 7, "p99": 9}}
    none = combined_status(statuses[1:2])
    assert none["export_delay_ms"] == {"p50": None, "p99": None}


def test_a_soak_whose_generator_kept_its_rate_has_no_shortfall() -> None:
    assert generator_shortfall(50_000, 600, 600 + STARTUP_ALLOWANCE_S + SAMPLE_S) is None
    assert generator_shortfall(50_000, 600, 604.0) is None


def test_a_soak_whose_generator_fell_behind_its_rate_says_so() -> None:
    # 30M events at 50,000/s asked; one process on a slow day sent them at ~29,000/s.
    assert generator_shortfall(50_000, 600, 1_034) == (
        "the load generator took 1034 s for 30000000 events, ~29014 events/s: the run does not test 50000/s")
