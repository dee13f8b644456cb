"""A spec end to end (AGGREGATIONS=deploy/aggregations/iot.toml), with the worker as a real process on
the embedded stack: IoT readings on every partition, across an hour boundary, with measures missing,
readings without a device id (a dead letter for one aggregation, counted in the other), malformed
records and bad times, then late readings. Every exported row of every aggregation, window and key in
S3, the Redis output of each aggregation (the latest window per device; every window per site), the
dead letters with their reasons, the late records and the raw archive of original records equal a
reference computed in plain Python from the readings."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import groundtruth as gt
import orjson
from helpers import wait_for
from pipeline_harness import (
    ROOT,
    Names,
    Worker,
    create_topics,
    list_etags,
    names_for,
    produce,
    read_objects,
    read_topic,
    run,
    web_port,
    worker_env,
)

from aggregations.spec import parse_spec
from devstack.stack import Endpoints
from formats.aggregates import AggregateRow, MeasureStats, parquet_to_aggregate_rows
from formats.events import INVALID_JSON, MISSING_FIELD, iso_to_epoch_ms, iso_utc
from formats.raw import parquet_to_raw
from formats.side_outputs import HEADER_MISSED, HEADER_REASON, source_offset
from sinks.redis_store import RedisWindowStore

SPEC_PATH = ROOT / "deploy" / "aggregations" / "iot.toml"
SPEC = parse_spec(SPEC_PATH.read_text(), ["tumbling_1m", "hopping_1m"])
WINDOWS = {"tumbling_1m": (60_000, 60_000), "hopping_1m": (60_000, 30_000)}
BASE_MS = 1_795_906_500_000  # 2026-11-28T22:55:00Z: the readings cross 23:00
PER_PARTITION = 400  # 1 s apart: ten minutes of readings per partition
SENTINEL_MS = BASE_MS + 2 * 3_600_000
STEP_DEADLINE_S = 120.0
LATEST_N = 60


def _readings(seed: int) -> tuple[list[gt.Produced], dict[int, str]]:
    """Phase 1 per partition in event-time order with disorder below the lateness (10 s), and the
    dead-letter reason expected per index in that list."""
    rng = random.Random(seed)
    records: list[gt.Produced] = []
    reasons: dict[int, str] = {}
    for i in range(PER_PARTITION):
        for p in range(gt.PARTITIONS):
            event_ms = BASE_MS + i * 1_500 + p * 13 - rng.choice((0, 0, 2_000, 7_000))
            if i % 97 == 11:
                records.append(gt.Produced(p, b"k", b"{not json"))
                reasons[len(records) - 1] = INVALID_JSON
                continue
            device = {"id": f"d-{rng.randrange(8)}", "site": rng.choice(("berlin", "paris", "rome"))}
            metrics: dict[str, Any] = {"temp": rng.randrange(-80, 120) / 4, "hum": rng.randrange(0, 400) / 4}
            if rng.random() < 0.1:
                del metrics[rng.choice(("temp", "hum"))]
            if rng.random() < 0.02:  # a rare device without a thermometer: windows with no temperature
                device["id"], metrics = "d-hum", {"hum": metrics.get("hum", 0.5)}
            if i % 53 == 7:
                del device["id"]  # a dead letter for "devices", still counted in "sites"
                reasons[len(records)] = MISSING_FIELD
            records.append(gt.Produced(p, device.get("id", "none").encode(), orjson.dumps(
                {"device": device, "metrics": metrics, "time": iso_utc(event_ms)})))
    return records, reasons


def _sentinels() -> list[gt.Produced]:
    return [gt.Produced(p, b"sentinel", orjson.dumps({"device": {"id": "sentinel", "site": "sentinel"},
                                                       "metrics": {"temp": 0}, "time": iso_utc(SENTINEL_MS)}))
            for p in range(gt.PARTITIONS)]


def _late() -> list[gt.Produced]:
    """Readings of the first minute, sent once every window of it closed: late for every window."""
    return [gt.Produced(p, b"late", orjson.dumps({"device": {"id": "d-1", "site": "rome"}, "metrics": {"temp": 99.0},
                                                   "time": iso_utc(BASE_MS + 5_000 + p)}))
            for p in range(gt.PARTITIONS)]


def _reference(records: list[gt.Produced]) -> dict[tuple[str, str, int, tuple[Any, ...]], AggregateRow]:
    cells: dict[tuple[str, str, int, tuple[Any, ...]], list[list[float]]] = defaultdict(lambda: [[], []])
    for record in records:
        if not record.value.startswith(b"{\""):
            continue
        reading = orjson.loads(record.value)
        event_ms = iso_to_epoch_ms(reading["time"])
        assert event_ms is not None
        for aggregation in SPEC.aggregations:
            part = reading["device"].get(aggregation.key[0].path.names[1])
            if part is None:
                continue
            for window, (size, step) in WINDOWS.items():
                start = event_ms - event_ms % step
                while start > event_ms - size:
                    values = cells[(aggregation.name, window, start, (part,))]
                    for m, measure in enumerate(aggregation.measures):
                        if (value := reading["metrics"].get(measure.names[1])) is not None:
                            values[m].append(value)
                    start -= step
    rows = {}
    for (aggregation, window, start, key), values in cells.items():
        measures = len(next(a for a in SPEC.aggregations if a.name == aggregation).measures)
        rows[(aggregation, window, start, key)] = AggregateRow(
            aggregation, window, start, start + 60_000, key,
            tuple(MeasureStats(len(v), sum(v), min(v), max(v)) if v else None for v in values[:measures]))
    return {k: r for k, r in rows.items() if r.window_end_ms <= SENTINEL_MS - gt.LATENESS_MS}


def _lake_rows(client: Any, names: Names) -> dict[tuple[str, str, int, tuple[Any, ...]], AggregateRow]:
    found: dict[tuple[str, str, int, tuple[Any, ...]], AggregateRow] = {}
    for aggregation in SPEC.aggregations:
        layout = aggregation.layout()
        objects = read_objects(client, names.bucket, f"aggregated/{aggregation.name}/",
                               lambda body, name=aggregation.name, layout=layout: parquet_to_aggregate_rows(
                                   body, name, layout))
        for rows in objects.values():
            for row in rows:
                key = (row.aggregation, row.window, row.window_start_ms, row.key)
                assert key not in found, f"{key} twice"
                found[key] = row
    return found


def test_a_spec_end_to_end_equals_the_reference(stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    names = names_for(unique_name)
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "AGGREGATIONS": str(SPEC_PATH)}
    worker = Worker(env, tmp_path / "worker.log")
    store = RedisWindowStore(stack.redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=LATEST_N)
    store.open()
    worker.start()
    try:
        phase1, reasons = _readings(3)
        offsets = run(produce(stack, names.events, phase1 + _sentinels()))
        want = _reference(phase1)
        wait_for(lambda: worker.status()["frontier_ms"] == SENTINEL_MS - gt.LATENESS_MS, timeout_s=STEP_DEADLINE_S,
                 what="the frontier to pass the readings", detail=worker.status)
        wait_for(lambda: len(_lake_rows(client, names)) == len(want), timeout_s=STEP_DEADLINE_S,
                 what="every window of every aggregation in S3", detail=lambda: len(_lake_rows(client, names)))
        assert _lake_rows(client, names) == want
        assert {k[0] for k in want} == {"devices", "sites"} and any(None in r.measures for r in want.values())

        # Redis: the latest window of each device (its output is "latest"); every window of each site.
        by_key: dict[tuple[str, str, tuple[Any, ...]], list[AggregateRow]] = defaultdict(list)
        for (aggregation, window, _start, key), row in sorted(want.items(), key=lambda item: -item[0][2]):
            by_key[(aggregation, window, key)].append(row)
        layouts = {a.name: a.layout() for a in SPEC.aggregations}
        for (aggregation, window, key), rows in by_key.items():
            kept = rows[:1] if aggregation == "devices" else rows[:LATEST_N]
            assert store.latest_aggregates(aggregation, window, key, LATEST_N, layouts[aggregation]) == kept, (
                aggregation, window, key)

        # Dead letters: one per record, with the reason of the aggregation that rejected it.
        dead = {(r.partition, source_offset([(h, bytes(v)) for h, v in r.headers])):
                dict(r.headers)[HEADER_REASON].decode() for r in run(read_topic(stack, names.dlq))}
        assert dead == {(phase1[index].partition, offsets[index]): reason for index, reason in reasons.items()}

        # Late readings: in the late topic, naming every window they missed; counted nowhere.
        late = _late()
        run(produce(stack, names.events, late))
        wait_for(lambda: len(run(read_topic(stack, names.late))) == len(late), timeout_s=STEP_DEADLINE_S,
                 what="the late readings in the late topic")
        for record in run(read_topic(stack, names.late)):
            missed = dict(record.headers)[HEADER_MISSED].decode().split(",")
            assert sorted(w.split("@")[0] for w in missed) == sorted(
                ["devices/tumbling_1m", "devices/hopping_1m", "devices/hopping_1m", "sites/tumbling_1m",
                 "sites/hopping_1m", "sites/hopping_1m"])
        assert _lake_rows(client, names) == want

        # The raw archive: every record with a good time, as it was written.
        def archived() -> dict[tuple[int, int], bytes]:
            found = {}
            for rows in read_objects(client, names.bucket, "events/", lambda body: [parquet_to_raw(body)]).values():
                found.update({(rows[0].partition, o): raw for o, raw in zip(rows[0].offsets, rows[0].raws,
                                                                              strict=True)})
            return found

        good = {(r.partition, o): r.value for r, o in zip(phase1, offsets, strict=False)
                if r.value.startswith(b"{\"")}
        wait_for(lambda: good.items() <= archived().items(), timeout_s=STEP_DEADLINE_S,
                 what="every reading with a good time in the raw archive")
        assert list_etags(client, names.bucket, "aggregated/hourly/") == {}
    finally:
        store.close()
        worker.stop()
