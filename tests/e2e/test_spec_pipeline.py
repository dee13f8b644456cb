"""The shipped IoT and clickstream specs end to end (AGGREGATIONS=deploy/aggregations/iot.toml, then
clickstream.toml), with the worker as a real process on the embedded stack, in the phases of
tests/e2e/specgen.py with the records of tests/e2e/specref.py (IoT) and tests/e2e/clickref.py (clickstream):
records on every partition across an hour boundary, with measures missing, null key parts, hostile keys,
records that one aggregation rejects and others count, malformed records and bad times; then, once the
frontier has settled, records wholly late, partly late and on time; then the sentinels. Every exported row
of every aggregation, window and key in S3, each key's Redis index (by the aggregation's output: latest,
every or off), the web API, the dead letters with their reasons, the late records with the windows they
missed and the raw archive of original records equal the reference. Then the batch layer (`faust -A app
batch` with the same spec): every sealed hour's and day's rollups of each aggregation, and the windows
restated with the late readings in S3 and Redis, equal the reference too. The chaos suite runs the
pipeline's phases under faults (make chaos SPEC=iot)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import checks
import clickref
import groundtruth as gt
import pytest
import specgen
import specref
from helpers import wait_for
from pipeline_harness import (
    Worker,
    create_topics,
    list_etags,
    names_for,
    produce,
    read_spec_archive,
    read_spec_rollups,
    read_spec_rows,
    read_topic,
    run,
    web_port,
    worker_env,
)

from devstack.stack import Endpoints
from formats.aggregates import aggregate_row_to_api
from formats.alerts import decode_alert
from formats.batch import aggregate_rollup_to_api
from formats.lake import DAY_MS, HOUR_MS, spec_rollup_key
from sinks.redis_store import RedisWindowStore
from web.params import aggregation_to_api

STEP_DEADLINE_S = 120.0
BATCH_DEADLINE_S = 300.0
LATEST_N = 60
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("ref", [specref, clickref], ids=["iot", "clickstream"])
def test_a_spec_end_to_end_equals_the_reference(ref: Any, stack: Endpoints, unique_name: str, tmp_path: Path) -> None:
    names = names_for(unique_name)
    spec = ref.spec()
    layouts = {a.name: a.layout() for a in spec.aggregations}
    client = stack.s3_client()
    client.create_bucket(Bucket=names.bucket)
    run(create_topics(stack, names))
    rules = tmp_path / "rules.toml"
    rules.write_text("\n".join(rule.toml() for rule in ref.ALERT_RULES))
    env = {**worker_env(stack, names, tmp_path / "state", web_port()), "AGGREGATIONS": str(ref.SPEC_PATH),
           "ALERT_RULES": str(rules)}
    worker = Worker(env, tmp_path / "worker.log")
    store = RedisWindowStore(stack.redis_url, names.redis_prefix, ttl_ms=3_600_000, latest_n=LATEST_N)
    store.open()
    worker.start()
    try:
        warm = ref.warmup(seed=2)
        offsets0 = run(produce(stack, names.events, [s.record for s in warm]))
        first_low_ms = min(s.outcome.event_ms for s in warm if s.outcome.event_ms is not None) - gt.LATENESS_MS
        wait_for(lambda: worker.status()["frontier_ms"] == first_low_ms, timeout_s=STEP_DEADLINE_S,
                 what=f"the frontier to reach {first_low_ms} after phase 0", detail=worker.status)
        phase1 = ref.phase1(300, seed=3)
        offsets1 = run(produce(stack, names.events, [s.record for s in phase1]))
        frontier_ms = ref.frontier_after(phase1)
        wait_for(lambda: worker.status()["frontier_ms"] == frontier_ms, timeout_s=STEP_DEADLINE_S,
                 what=f"the frontier to reach {frontier_ms} after phase 1", detail=worker.status)

        phase2 = ref.phase2(frontier_ms, seed=4)
        offsets2 = run(produce(stack, names.events, [s.record for s in phase2]))
        last2 = {s.record.partition: o for s, o in zip(phase2, offsets2, strict=True)}
        wait_for(lambda: all(worker.status()["input_offsets"].get(str(p), -1) >= o for p, o in last2.items()),
                 timeout_s=STEP_DEADLINE_S, what="phase 2 to be read", detail=worker.status)
        sentinel_offsets = run(produce(stack, names.events, [s.record for s in ref.sentinels()]))
        on_time = list(zip([*warm, *phase1], [*offsets0, *offsets1], strict=True))
        want = ref.reference(on_time, list(zip(phase2, offsets2, strict=True)),
                                 frontier_ms, sentinel_offsets)
        index = ref.redis_expected(want.rows, LATEST_N)
        assert {k[0] for k in want.rows} == {a.name for a in spec.aggregations} and want.late and want.dead
        assert any(None in row.measures for row in want.rows.values())

        wait_for(lambda: sum(len(rows) for rows in read_spec_rows(client, names.bucket, spec).values())
                 >= len(want.rows), timeout_s=STEP_DEADLINE_S, what="every window of every aggregation in S3")
        assert checks.spec_rows(read_spec_rows(client, names.bucket, spec), want.rows) == []
        wait_for(lambda: checks.spec_redis_written(store, index, layouts) == len(index), timeout_s=STEP_DEADLINE_S,
                 what="every key's newest window in Redis")
        assert checks.spec_redis(store, index, layouts) == []

        # The web API: the spec, and each key's closed windows as Redis holds them.
        assert worker.get("/v1/aggregations")[1]["aggregations"] == [aggregation_to_api(a) for a in spec.aggregations]
        for (aggregation, window, key), rows in index.items():
            columns = [column for column, _ in layouts[aggregation].key]
            query = {column: "" if part is None else part for column, part in zip(columns, key, strict=True)}
            status, body = worker.get(f"/v1/aggregations/{aggregation}/{window}/closed?"
                                      + urlencode({**query, "limit": LATEST_N}))
            assert (status, body["key"], body["closed"]) == (
                200, dict(zip(columns, key, strict=True)),
                [aggregate_row_to_api(row, layouts[aggregation]) for row in rows])
        # The open windows: the sentinels', from the stage-2 state of the key's owner.
        for (aggregation, window, key), rows in specgen.open_rows(spec, ref.sentinels()).items():
            columns = [column for column, _ in layouts[aggregation].key]
            query = {column: "" if part is None else part for column, part in zip(columns, key, strict=True)}
            status, body = worker.get(f"/v1/aggregations/{aggregation}/{window}/open?{urlencode(query)}")
            assert (status, body["open"]) == (200, [{**aggregate_row_to_api(row, layouts[aggregation]),
                                                     "state": "open"} for row in rows]), (aggregation, window)
        for path, status, message in ref.API_ERRORS:
            answer = worker.get(path)
            assert answer[0] == status and message in answer[1]["error"]["message"], (path, answer)
        # The alert rules of the aggregations, judged per key as each window closed.
        closed_until_ms = specgen.SENTINEL_MS - gt.LATENESS_MS  # the sentinels' frontier
        alerts = sorted(a for rule in ref.ALERT_RULES
                        for a in specgen.threshold_alerts(spec, rule, want.rows, closed_until_ms))
        assert {a[3] for a in alerts} == {"firing", "resolved"}
        wait_for(lambda: len(run(read_topic(stack, names.alerts))) >= len(alerts), timeout_s=STEP_DEADLINE_S,
                 what=f"the {len(alerts)} alerts in the alerts topic")
        made = [decode_alert(record.value) for record in run(read_topic(stack, names.alerts))]
        assert sorted((a.rule, a.event_type, a.window_start_ms, a.state, a.value) for a in made) == alerts
        assert {a.window for a in made} == {f"{rule.aggregation}/{rule.window}" for rule in ref.ALERT_RULES}
        wait_for(lambda: len(run(read_topic(stack, names.late))) >= len(want.late), timeout_s=STEP_DEADLINE_S,
                 what="the late readings in the late topic")
        assert checks.dead_letters(run(read_topic(stack, names.dlq)), want.dead) == []
        assert checks.late_records(run(read_topic(stack, names.late)), want.late) == []
        wait_for(lambda: len(want.archived) <= sum(len(c.offsets) for (c,) in read_spec_archive(
            client, names.bucket).values()), timeout_s=STEP_DEADLINE_S, what="every record with a time archived")
        assert checks.spec_archive(read_spec_archive(client, names.bucket), want.archived) == []
        assert list_etags(client, names.bucket, "aggregated/tumbling_1m/") == {}  # the article's job is off

        # The batch layer: rollups of every sealed period (the sentinels' hour and day are not sealed), and
        # the windows restated with every late reading (those a day late open windows never exported).
        result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "batch"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=BATCH_DEADLINE_S)
        (tmp_path / "batch.log").write_text(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        sealed_ms = ref.SENTINEL_MS - ref.SENTINEL_MS % HOUR_MS
        everything = [*warm, *phase1, *phase2]
        expected = {spec_rollup_key("", aggregation, kind, start): rows for (aggregation, kind, start), rows in
                    ref.rollups(everything, {"hourly": HOUR_MS, "daily": DAY_MS}, sealed_ms).items()}
        assert {k for k in expected if "/daily/" in k} and len(expected) > 6
        assert read_spec_rollups(client, names.bucket, spec) == expected
        # The same rollups through the web API, per aggregation and period, and filtered by a key.
        by_period = ref.rollups(everything, {"hourly": HOUR_MS, "daily": DAY_MS}, sealed_ms)
        for aggregation in spec.aggregations:
            layout = aggregation.rollup_layout()
            for kind in ("hourly", "daily"):
                starts = sorted(start for (name, k, start) in by_period if (name, k) == (aggregation.name, kind))
                rows = [row for start in starts for row in by_period[(aggregation.name, kind, start)]]
                query = {"from": starts[0], "to": sealed_ms, "limit": 10_000}
                status, body = worker.get(f"/v1/aggregations/{aggregation.name}/rollups/{kind}?{urlencode(query)}")
                assert (status, body["rollups"], body["truncated"]) == (
                    200, [aggregate_rollup_to_api(row, layout) for row in rows], False), (aggregation.name, kind)
                first = rows[0][layout.key[0][0]]
                status, body = worker.get(f"/v1/aggregations/{aggregation.name}/rollups/{kind}?" + urlencode(
                    {**query, layout.key[0][0]: "" if first is None else first, "limit": 1}))
                picked = [aggregate_rollup_to_api(row, layout) for row in rows if row[layout.key[0][0]] == first]
                assert (status, body["rollups"], body["truncated"]) == (200, picked[:1], len(picked) > 1)
        status, body = worker.get("/v1/rollups/hourly")
        assert status == 404 and "/v1/aggregations/{aggregation}/rollups/{period}" in body["error"]["message"]
        full = ref.reference(on_time, list(zip(phase2, offsets2, strict=True)),
                                 -(2**63), sentinel_offsets).rows
        final = ref.restated(want.rows, full)
        assert sum(1 for row in final.values() if row.revision) > 10
        assert checks.spec_rows(read_spec_rows(client, names.bucket, spec), final) == []
        assert checks.spec_redis(store, ref.redis_expected(final, LATEST_N), layouts) == []
    finally:
        store.close()
        worker.stop()
