"""RedisWindowStore against the real embedded Redis: one key prefix per test."""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
import redis
from helpers import wait_for
from redis.backoff import NoBackoff
from redis.retry import Retry

from devstack.ports import free_port_block
from devstack.stack import Endpoints
from formats.aggregates import AggregateColumns, AggregateLayout, AggregateRow, MeasureStats
from formats.batch import BATCH_COUNTERS, BatchRun
from formats.keys import decode_key_part
from formats.rows import WindowRow
from sinks.policy import SinkConfigurationError, SinkUnavailableError
from sinks.redis_store import MAX_INDEXED_TYPES, ROWS_PER_SCRIPT, RedisWindowStore, lua_is_patched
from testing.reference import exact

START_MS = 1763251140000  # 2025-11-15T23:59:00Z
TTL_MS = 3_600_000
PASSWORD = "s3cr3t-P@ss:word/%41"
PASSWORD_IN_URL = quote(PASSWORD, safe="")  # s3cr3t-P%40ss%3Aword%2F%2541


def row(event_type: str = "click", start_ms: int = START_MS, count: int = 3, total: float = 4.5,
        low: float = -1.0, high: float = 3.0, window: str = "tumbling_1m") -> WindowRow:
    return WindowRow(window, start_ms, start_ms + 60_000, event_type, count, total, low, high)


@pytest.fixture
def raw(stack: Endpoints) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(unique_name: str) -> str:
    return f"{unique_name}:"


def open_store(stack: Endpoints, prefix: str, latest_n: int = 3) -> RedisWindowStore:
    store = RedisWindowStore(stack.redis_url, prefix, TTL_MS, latest_n)
    store.open()
    return store


@pytest.fixture
def store(stack: Endpoints, prefix: str) -> Iterator[RedisWindowStore]:
    store = open_store(stack, prefix)
    yield store
    store.close()


def scan(raw: redis.Redis, pattern: str) -> set[str]:
    return {key.decode() for key in raw.scan_iter(match=pattern, count=1000)}


def test_rows_read_back_exactly(store: RedisWindowStore, raw: redis.Redis, prefix: str) -> None:
    rows = [
        row("click", total=-0.0, low=-0.0, high=0.0),
        row("view", count=2, total=1.7976931348623157e308, low=5e-324, high=1.7976931348623157e308),
        row("buy", count=3, total=0.1 + 0.2, low=0.1, high=0.2),
        row("boom", count=2, total=float("inf"), low=1.0, high=1.7976931348623157e308),
    ]
    store.write(rows)

    got = [store.get_window("tumbling_1m", r.event_type, START_MS) for r in rows]
    assert exact(got) == exact(rows)
    assert store.get_window("tumbling_1m", "click", START_MS + 60_000) is None
    assert store.get_window("hopping_1m", "click", START_MS) is None
    assert raw.hgetall(f"{prefix}win:tumbling_1m:buy:{START_MS}") == {
        b"window": b"tumbling_1m",
        b"event_type": b"buy",
        b"window_start_ms": b"1763251140000",
        b"window_end_ms": b"1763251200000",
        b"count": b"3",
        b"sum": b"0.30000000000000004",
        b"min": b"0.1",
        b"max": b"0.2",
        b"mean": b"0.10000000000000002",
        b"revision": b"0",
        b"late_count": b"0",
    }
    assert raw.hget(f"{prefix}win:tumbling_1m:click:{START_MS}", "sum") == b"-0.0"
    assert raw.hget(f"{prefix}win:tumbling_1m:boom:{START_MS}", "mean") == b"inf"
    assert exact(store.latest("tumbling_1m", "view", 1)) == exact([rows[1]])
    assert raw.zrange(f"{prefix}latest:tumbling_1m:buy", 0, -1, withscores=True) == [(
        b'{"count":3,"event_type":"buy","late_count":0,"max":0.2,"mean":0.10000000000000002,"min":0.1,'
        b'"revision":0,"sum":0.30000000000000004,"window":"tumbling_1m","window_end_ms":1763251200000,'
        b'"window_start_ms":1763251140000}',
        float(START_MS),
    )]


def test_latest_is_newest_first_and_the_index_is_trimmed(store: RedisWindowStore, raw: redis.Redis,
                                                         prefix: str) -> None:
    windows = [row("click", START_MS + i * 60_000, count=i + 1, total=float(i)) for i in range(5)]
    store.write(windows[:2])
    store.write(windows[2:])
    store.write([row("view", START_MS)])

    assert exact(store.latest("tumbling_1m", "click", 10)) == exact([windows[4], windows[3], windows[2]])
    assert exact(store.latest("tumbling_1m", "click", 2)) == exact([windows[4], windows[3]])
    assert exact(store.latest("tumbling_1m", "view", 3)) == exact([row("view", START_MS)])
    assert store.latest("tumbling_1m", "nothing", 3) == []
    assert raw.zcard(f"{prefix}latest:tumbling_1m:click") == 3
    assert raw.zrange(f"{prefix}latest:tumbling_1m:click", 0, -1, withscores=True)[0][1] == START_MS + 120_000
    # Trimmed out of the index, the hashes remain until their TTL.
    assert exact([store.get_window("tumbling_1m", "click", START_MS)]) == exact([windows[0]])
    with pytest.raises(ValueError, match="n must be >= 1"):
        store.latest("tumbling_1m", "click", 0)


def test_event_types_are_listed_most_recently_active_first(store: RedisWindowStore, raw: redis.Redis,
                                                            prefix: str) -> None:
    store.write([row("view", START_MS + 60_000), row("a/../b=c", START_MS)])
    store.write([row("click", START_MS + 120_000)])
    store.write([row("view", START_MS)])  # a replay of an older window: "view" keeps its latest score
    store.write([row("other", START_MS, window="hopping_1m_30s")])

    assert store.event_types("tumbling_1m", 10) == ["click", "view", "a/../b=c"]
    assert store.event_types("tumbling_1m", 1) == ["click"]
    assert store.event_types("hopping_1m_30s", 10) == ["other"]
    assert store.event_types("unknown", 10) == []
    assert raw.zscore(f"{prefix}types:tumbling_1m", "view") == START_MS + 60_000
    with pytest.raises(ValueError, match="n must be >= 1"):
        store.event_types("tumbling_1m", 0)


def test_keys_have_a_ttl(store: RedisWindowStore, raw: redis.Redis, prefix: str) -> None:
    store.write([row("click")])
    for key in (f"{prefix}win:tumbling_1m:click:{START_MS}", f"{prefix}latest:tumbling_1m:click",
                f"{prefix}types:tumbling_1m"):
        assert 0 < raw.pttl(key) <= TTL_MS


def test_rewrites_are_idempotent_and_one_window_has_one_member(store: RedisWindowStore, raw: redis.Redis,
                                                               prefix: str) -> None:
    rows = [row("click", START_MS + i * 60_000, count=i + 1) for i in range(3)] + [row("view")]
    store.write(rows)
    index = f"{prefix}latest:tumbling_1m:click"
    members = raw.zrange(index, 0, -1, withscores=True)
    hashes = {key: raw.hgetall(key) for key in scan(raw, f"{prefix}win:*")}

    store.write(rows)
    store.write(list(reversed(rows)))

    assert raw.zrange(index, 0, -1, withscores=True) == members
    assert len(members) == 3
    assert {key: raw.hgetall(key) for key in scan(raw, f"{prefix}win:*")} == hashes
    assert len(hashes) == 4

    # A window rewritten with other values (should not happen) still has exactly one member.
    changed = row("click", START_MS + 60_000, count=99, total=-7.5)
    store.write([changed])
    assert raw.zcard(index) == 3
    assert exact(store.latest("tumbling_1m", "click", 3)) == exact([rows[2], changed, rows[0]])
    assert exact([store.get_window("tumbling_1m", "click", START_MS + 60_000)]) == exact([changed])
    # The same window twice in one batch: the last one wins, in the hash and in the index.
    store.write([row("dup", count=1), row("dup", count=2)])
    assert exact(store.latest("tumbling_1m", "dup", 5)) == exact([row("dup", count=2)])
    assert exact([store.get_window("tumbling_1m", "dup", START_MS)]) == exact([row("dup", count=2)])


def test_hostile_event_types_cannot_collide_or_escape(store: RedisWindowStore, raw: redis.Redis, prefix: str,
                                                      unique_name: str) -> None:
    hostile = ["a:b", "a%3Ab", "*", "?", "[x]", "{tag}", "/", "../..", "..", "line\nbreak", "😀" * 200,
               f"click:{START_MS}", "click", "latest:tumbling_1m:click", " ", "_x"]
    rows = [row(event_type, count=i + 1, total=float(i)) for i, event_type in enumerate(hostile)]
    store.write(rows)

    created = scan(raw, f"{prefix}*") - {f"{prefix}types:tumbling_1m"}
    assert len(created) == 2 * len(hostile)
    expected_encoded = {
        "a:b": "a%3Ab", "a%3Ab": "a%253Ab", "*": "%2A", "?": "%3F", "[x]": "%5Bx%5D", "{tag}": "%7Btag%7D",
        "/": "%2F", "../..": "%2E.%2F..", "..": "%2E.", "line\nbreak": "line%0Abreak",
        "😀" * 200: "%F0%9F%98%80" * 200, f"click:{START_MS}": f"click%3A{START_MS}", "click": "click",
        "latest:tumbling_1m:click": "latest%3Atumbling_1m%3Aclick", " ": "%20", "_x": "%5Fx",
    }
    assert created == (
        {f"{prefix}win:tumbling_1m:{enc}:{START_MS}" for enc in expected_encoded.values()}
        | {f"{prefix}latest:tumbling_1m:{enc}" for enc in expected_encoded.values()}
    )
    # Every key parses back to exactly one event type, and nothing was written outside the prefix.
    decoded = {decode_key_part(key[len(prefix):].split(":")[2]) for key in created}
    assert decoded == set(hostile)
    assert scan(raw, f"*{unique_name}*") == created | {f"{prefix}types:tumbling_1m"}
    # The types index holds them as values, never as key parts.
    assert sorted(store.event_types("tumbling_1m", 100)) == sorted(hostile)
    # Each reads back its own row.
    for source in rows:
        assert exact([store.get_window("tumbling_1m", source.event_type, START_MS)]) == exact([source])
        assert exact(store.latest("tumbling_1m", source.event_type, 5)) == exact([source])


def test_closed_port_is_unavailable_without_leaking_the_password(prefix: str) -> None:
    port = free_port_block(1)
    store = RedisWindowStore(f"redis://user:{PASSWORD_IN_URL}@127.0.0.1:{port}/0", prefix, TTL_MS, 3)
    store.open()
    try:
        began = time.monotonic()
        with pytest.raises(SinkUnavailableError) as raised:
            store.write([row()])
        elapsed_s = time.monotonic() - began
        with pytest.raises(SinkUnavailableError):
            store.latest("tumbling_1m", "click", 1)
    finally:
        store.close()
    message = str(raised.value)
    assert message.startswith(f"Redis write at redis://127.0.0.1:{port}/0 failed: ConnectionError: ")
    assert "Connection refused" in message
    text = "".join(traceback.format_exception(raised.value)) + repr(store)
    for secret in (PASSWORD, PASSWORD_IN_URL, "s3cr3t"):
        assert secret not in text
    # redis-py's own retries (10 by default) are off: the caller's policy owns retries.
    assert elapsed_s < 2.0


def test_wrong_password_is_a_configuration_error_without_the_password(stack: Endpoints, prefix: str) -> None:
    # The embedded Redis has no ACL user "reporter" (a nopass default user would accept any
    # password without a user name): AUTH fails, which no retry can fix.
    url = stack.redis_url.replace("redis://", f"redis://reporter:{PASSWORD_IN_URL}@", 1)
    assert PASSWORD_IN_URL in url
    store = RedisWindowStore(url, prefix, TTL_MS, 3)
    store.open()
    try:
        with pytest.raises(SinkConfigurationError) as raised:
            store.write([row()])
    finally:
        store.close()
    assert str(raised.value).startswith("Redis write at redis://127.0.0.1:")
    assert str(raised.value).endswith(
        "refused: AuthenticationError: invalid username-password pair or user is disabled.")
    text = "".join(traceback.format_exception(raised.value))
    assert PASSWORD not in text
    assert PASSWORD_IN_URL not in text
    assert "s3cr3t" not in text


def test_a_window_of_ten_thousand_event_types_is_written_whole(store: RedisWindowStore, raw: redis.Redis,
                                                               prefix: str) -> None:
    rows = [row(f"type-{i}", count=i + 1, total=i / 4) for i in range(10_000)]
    store.write(rows)
    assert len(scan(raw, f"{prefix}win:*")) == 10_000
    assert exact([store.get_window("tumbling_1m", "type-9999", START_MS)]) == exact([rows[-1]])
    assert exact(store.latest("tumbling_1m", "type-1234", 3)) == exact([rows[1234]])
    assert raw.zcard(f"{prefix}types:tumbling_1m") == MAX_INDEXED_TYPES


def test_batch_runs_add_up_in_the_status_hash_without_a_ttl(store: RedisWindowStore, raw: redis.Redis,
                                                             prefix: str) -> None:
    assert store.read_batch_status() is None
    run = BatchRun(finished_at_ms=1_000, duration_ms=250, ok=True, last_sealed_hour_ms=3_600_000, periods_computed=2,
                   rows_restated=4, objects_written=6)
    store.record_batch_run(run)
    store.record_batch_run(BatchRun(finished_at_ms=2_000, duration_ms=7, ok=False, last_sealed_hour_ms=None))
    store.record_batch_run(dataclasses.replace(run, finished_at_ms=3_000, last_sealed_hour_ms=7_200_000))
    status = store.read_batch_status()
    assert status is not None
    assert (status.last_success_ms, status.last_failure_ms, status.duration_ms, status.last_sealed_hour_ms) == (
        3_000, 2_000, 250, 7_200_000)
    assert dict(status.counters) == {**dict.fromkeys(BATCH_COUNTERS, 0), "runs": 2, "runs_failed": 1,
                                     "periods_computed": 4, "rows_restated": 8, "objects_written": 12}
    assert scan(raw, f"{prefix}*") == {f"{prefix}batch:status"}
    assert raw.pttl(f"{prefix}batch:status") == -1  # runs may be a day apart


# -- a spec's aggregations ----------------------------------------------------------------------------

LAYOUT = AggregateLayout(key=(("device_id", "string"), ("port", "int")), measures=("temp", "hum"))


def aggregate_row(device: str, start_ms: int, temp: float, hum: float | None = None) -> AggregateRow:
    return AggregateRow("devices", "tumbling_1m", start_ms, start_ms + 60_000, (device, 7),
                        (MeasureStats(1, temp, temp, temp), None if hum is None else MeasureStats(1, hum, hum, hum)))


def test_a_specs_rows_follow_its_redis_output(store: RedisWindowStore, raw: redis.Redis, prefix: str) -> None:
    rows = [aggregate_row("d:1", START_MS + m * 60_000, m - 0.5, 40.0 if m % 2 else None) for m in range(5)]
    store.write_aggregates(rows, LAYOUT, "every")
    latest = store.latest_aggregates("devices", "tumbling_1m", ("d:1", 7), 10, LAYOUT)
    assert latest == rows[::-1][:3]  # latest_n of 3, newest first
    hashes = scan(raw, f"{prefix}agg:*")
    assert len(hashes) == 5 and f"{prefix}agg:devices:tumbling_1m:d%3A1:7:{START_MS}" in hashes
    fields = raw.hgetall(f"{prefix}agg:devices:tumbling_1m:d%3A1:7:{START_MS}")
    assert fields[b"temp.sum"] == b"-0.5" and fields[b"hum.count"] == b"" and fields[b"key.port"] == b"7"
    assert 0 < raw.pttl(f"{prefix}agg:devices:tumbling_1m:d%3A1:7:{START_MS}") <= TTL_MS
    store.write_aggregates(rows[:2], LAYOUT, "every")  # a replay changes nothing
    assert store.latest_aggregates("devices", "tumbling_1m", ("d:1", 7), 10, LAYOUT) == rows[::-1][:3]

    other = [aggregate_row("d-2", START_MS + m * 60_000, float(m)) for m in range(3)]
    store.write_aggregates(other, LAYOUT, "latest")  # the newest window only, and no hash
    assert store.latest_aggregates("devices", "tumbling_1m", ("d-2", 7), 10, LAYOUT) == [other[-1]]
    assert not scan(raw, f"{prefix}agg:*d-2*")
    store.write_aggregates([aggregate_row("d-3", START_MS, 1.0)], LAYOUT, "off")
    assert not scan(raw, f"{prefix}*d-3*")


def test_a_window_of_more_keys_than_a_script_call_takes_is_written_whole(store: RedisWindowStore,
                                                                         raw: redis.Redis, prefix: str) -> None:
    rows = [aggregate_row(f"d-{i}", START_MS, float(i)) for i in range(2 * ROWS_PER_SCRIPT + 1)]
    store.write_aggregates(rows, LAYOUT, "latest")
    assert len(scan(raw, f"{prefix}agglatest:*")) == len(rows)
    assert store.latest_aggregates("devices", "tumbling_1m", (f"d-{len(rows) - 1}", 7), 1, LAYOUT) == [rows[-1]]


@pytest.mark.parametrize("output", ["every", "latest"])
def test_a_window_written_as_columns_is_its_rows_written(stack: Endpoints, raw: redis.Redis, prefix: str,
                                                         output: str) -> None:
    """write_aggregate_columns (the speed layer's export) leaves Redis as write_aggregates of the same rows:
    every key, value, member, score and TTL bound alike, under two prefixes."""
    rows = [aggregate_row(f"d:{i}", START_MS, i * 0.5 - 3, None if i % 3 else float(i))
            for i in range(ROWS_PER_SCRIPT + 5)]  # two script calls
    rows += [AggregateRow("devices", "tumbling_1m", START_MS, START_MS + 60_000, (None, None),
                          (MeasureStats(2, -0.0, -1.0, float("inf")), None))]
    by_rows, by_columns = open_store(stack, prefix + "rows:"), open_store(stack, prefix + "columns:")
    try:
        by_rows.write_aggregates(rows, LAYOUT, output)
        by_columns.write_aggregate_columns(AggregateColumns.of_rows(rows, LAYOUT), LAYOUT, output)
    finally:
        by_rows.close()
        by_columns.close()
    assert redis_content(raw, prefix + "columns:") == redis_content(raw, prefix + "rows:") != {}


def redis_content(raw: redis.Redis, prefix: str) -> dict[str, object]:
    """Every key under the prefix (the prefix cut off) with its content, and whether it has a TTL."""
    found: dict[str, object] = {}
    for key in scan(raw, f"{prefix}*"):
        kind = raw.type(key).decode()
        value = raw.hgetall(key) if kind == "hash" else raw.zrange(key, 0, -1, withscores=True)
        found[key[len(prefix):]] = (kind, value, raw.pttl(key) > 0)
    return found


def test_a_script_past_its_time_limit_is_a_transient_failure(store: RedisWindowStore, raw: redis.Redis,
                                                             stack: Endpoints) -> None:
    """Redis answers BUSY while another client's script runs past its time limit: retry, not a crash
    (seen when one call wrote a window of 250,000 keys)."""
    threshold = raw.config_get("lua-time-limit")["lua-time-limit"]
    raw.config_set("lua-time-limit", 20)
    spin = "local t = redis.call('TIME'); while tonumber(redis.call('TIME')[1]) < tonumber(t[1]) + 20 do end"
    with ThreadPoolExecutor(1) as pool:
        # The spinning client neither times out nor retries: redis-py 8 gives a client a 5 s socket timeout
        # and 10 retries, so its 20 s script ran again after the kill below and held Redis anew.
        spinner = redis.Redis.from_url(stack.redis_url, socket_timeout=60, retry=Retry(NoBackoff(), 0))
        busy = pool.submit(spinner.eval, spin, 0)
        try:
            wait_for(lambda: _is_busy(raw), timeout_s=10, what="another client's script to hold Redis")
            with pytest.raises(SinkUnavailableError, match="BUSY"):
                store.write([row()])
        finally:
            killer = redis.Redis.from_url(stack.redis_url)
            wait_for(lambda: _killed(killer), timeout_s=10, what="the spinning script to be killed")
            killer.close()
            raw.config_set("lua-time-limit", threshold)
        with pytest.raises(redis.exceptions.ResponseError):
            busy.result(timeout=10)
    store.write([row()])  # and Redis takes writes again


def _is_busy(client: redis.Redis) -> bool:
    try:
        client.ping()
    except redis.exceptions.ResponseError as exc:
        return str(exc).startswith("BUSY")
    return False


def _killed(client: redis.Redis) -> bool:
    try:
        client.script_kill()
    except redis.exceptions.ResponseError as exc:
        return "NOTBUSY" in str(exc)
    return True


def test_the_server_says_what_it_is(store: RedisWindowStore, raw: redis.Redis) -> None:
    product, version, host = store.server()
    info = raw.info("server")
    assert (product, version, host) == (("valkey", info["valkey_version"]) if "valkey_version" in info
                                        else ("redis", info["redis_version"])) + ("127.0.0.1",)
    assert lua_is_patched(product, version) is not None  # a version the rule reads
