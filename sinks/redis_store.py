"""Closed windows in Redis: a tiny writer (a server-side script per ROWS_PER_SCRIPT rows) and readers.

Keys: formats/redis.py.

Writes are idempotent: a replayed window writes the same hash values and the same index
member, and each write first removes any index member with the window's score, so one
window never has two members even if it were rewritten with different values.

The client is blocking (redis-py): call from a thread executor. redis-py's built-in
retries are disabled (its default retries 10 times with backoff); the caller's retry
policy owns retries. The URL may carry a password: it appears in no log or error message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from formats.aggregates import (
    AggregateColumns,
    AggregateLayout,
    AggregateRow,
    aggregate_columns_to_hashes,
    aggregate_columns_to_json,
    aggregate_row_from_json,
    aggregate_row_to_hash,
    aggregate_row_to_json,
    layout_fields,
)
from formats.batch import BatchRun, BatchStatus, batch_run_to_hash, batch_status_from_hash
from formats.redis import (
    aggregate_hash_key,
    aggregate_hash_keys,
    aggregate_latest_key,
    aggregate_latest_keys,
    alerts_active_key,
    alerts_recent_key,
    batch_status_key,
    encode_keys,
    latest_key,
    types_key,
    window_hash_key,
)
from formats.rows import WindowRow, row_from_hash, row_from_json, row_to_hash, row_to_json
from sinks.policy import (
    REDIS_PERMANENT_ERRORS,
    REDIS_TRANSIENT_ERRORS,
    REDIS_TRANSIENT_REPLIES,
    SinkConfigurationError,
    SinkUnavailableError,
)

__all__ = ["MAX_INDEXED_TYPES", "MAX_RECENT_ALERTS", "ROWS_PER_SCRIPT", "RedisWindowStore"]

logger = logging.getLogger(__name__)

# Bounds the types index when event types are many (or hostile input invents them).
MAX_INDEXED_TYPES: Final = 1000
# Bounds the alert history (a rule that flaps fires and resolves every window).
MAX_RECENT_ALERTS: Final = 1000
# Rows per call of the write script. A script holds the server for its whole run, and past its
# lua-time-limit (5 s) Redis answers every other client BUSY: a window of 250,000 keys in one call
# did (measured at 1M keys per minute). At ~20 us a row, this many hold it for ~40 ms.
ROWS_PER_SCRIPT: Final = 2000


def _chunks(rows: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), ROWS_PER_SCRIPT):
        yield rows[start:start + ROWS_PER_SCRIPT]


# The row write, each call run by the server in one step (atomic, like MULTI/EXEC). ARGV: ttl_ms, latest_n,
# max_types, then ONE MessagePack array (cmsgpack, built into Redis's Lua): the hash fields' names,
# the rows, each [hash key, latest index, window start, index member, field values...], and the
# types indexes, each [key, [latest window start, event type, ...]]. One argument instead of ~17 per
# row: with 10,000 event types the server's parsing of the arguments cost more than the writes.
# Numbers travel as strings (a Lua number would print a window start as 1.793574e+12). Each row
# first removes the index member with its window start, so a window never has two members; ZADD
# GT never lowers a type's score (a replay of an older window). A row with an empty hash key goes to
# its index only (a spec's aggregation whose Redis output is `latest`). The indexes are trimmed and their
# TTLs set once each, in the order of first use.
WRITE_ROWS: Final = """
local ttl, latest_n, max_types = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local body = cmsgpack.unpack(ARGV[4])
local fields, rows, types = body[1], body[2], body[3]
local n_fields = #fields
local pairs_ = {}
for i = 1, n_fields do
  pairs_[2 * i - 1] = fields[i]
end
local indexes, seen = {}, {}
for r = 1, #rows do
  local row = rows[r]
  local key, index, start = row[1], row[2], row[3]
  if key ~= '' then  -- '' : the row goes to its index only
    for i = 1, n_fields do
      pairs_[2 * i] = row[4 + i]
    end
    redis.call('HSET', key, unpack(pairs_, 1, 2 * n_fields))
    redis.call('PEXPIRE', key, ttl)
  end
  redis.call('ZREMRANGEBYSCORE', index, start, start)
  redis.call('ZADD', index, start, row[4])
  if not seen[index] then
    seen[index] = true
    indexes[#indexes + 1] = index
  end
end
for _, index in ipairs(indexes) do
  redis.call('ZREMRANGEBYRANK', index, 0, -(latest_n + 1))
  redis.call('PEXPIRE', index, ttl)
end
for t = 1, #types do
  local key, members = types[t][1], types[t][2]
  for i = 1, #members, 2000 do  -- unpack's stack is bounded: 1,000 pairs per ZADD
    redis.call('ZADD', key, 'GT', unpack(members, i, math.min(i + 1999, #members)))
  end
  redis.call('ZREMRANGEBYRANK', key, 0, -(max_types + 1))
  redis.call('PEXPIRE', key, ttl)
end
return #rows
"""


class _Scripts(NamedTuple):
    """The scripts registered with one client (redis-py runs them by digest, loading them when needed)."""

    client: redis.Redis
    write_rows: Any


# The first release of each line with the fix of CVE-2025-49844 (a use-after-free in the Lua parser: remote code
# execution by any client allowed to run scripts). The worker needs scripting (EVALSHA), so the vendor's
# workaround, denying EVAL to every user, is not open to it: the server must be patched.
LUA_FIXED: Final = {"redis": ((6, 2, 20), (7, 2, 11), (7, 4, 6), (8, 0, 4), (8, 2, 2)),
                    "valkey": ((7, 2, 11), (8, 0, 6), (8, 1, 4))}


def lua_is_patched(product: str, version: str) -> bool | None:
    """Whether this server release has the fix of CVE-2025-49844 (LUA_FIXED); None if the version does not
    parse. A release of a line with a fix needs at least it; a line older than every fix (Redis 7.0) has none;
    a line newer than the newest fixed one has it. A distribution may backport the fix without changing the
    number (Debian 12's redis-server 5:7.0.15-1~deb12u6 and later): this says False for those."""
    try:
        parts = tuple(int(part) for part in version.split(".")[:3])
    except ValueError:
        return None
    if len(parts) != 3:
        return None
    fixed = LUA_FIXED[product]
    for release in fixed:
        if parts[:2] == release[:2]:
            return parts >= release
    return parts > fixed[-1]


def _describe(url: str) -> str:
    """The URL without user, password or query: safe for messages."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix://{parts.path}"
        return f"{parts.scheme}://{parts.hostname or 'localhost'}:{parts.port or 6379}{parts.path}"
    except ValueError:
        return "the configured Redis server"


def _secrets(url: str) -> tuple[str, ...]:
    """Every form in which the URL's password could show up in a message."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        if parts.password:
            found.update({parts.password, unquote(parts.password)})
        for value in parse_qs(parts.query).get("password", []):
            found.add(value)
    except ValueError:
        pass
    found.discard("")
    # Longest first, so a secret containing another is replaced whole.
    return tuple(sorted(found, key=len, reverse=True))


class RedisWindowStore:
    """Writes and reads closed windows; configuration only until ``open()``."""

    __slots__ = ("_client", "_client_factory", "_latest_n", "_prefix", "_registered", "_secrets", "_target", "_ttl_ms",
                 "_url")

    def __init__(
        self,
        url: str,
        key_prefix: str,
        ttl_ms: int,
        latest_n: int,
        client_factory: Callable[[], redis.Redis] | None = None,
    ) -> None:
        if ttl_ms < 1:
            raise ValueError(f"ttl_ms must be >= 1, got {ttl_ms}")
        if latest_n < 1:
            raise ValueError(f"latest_n must be >= 1, got {latest_n}")
        self._url = url
        self._prefix = key_prefix
        self._ttl_ms = ttl_ms
        self._latest_n = latest_n
        self._client_factory = client_factory
        self._client: redis.Redis | None = None
        self._registered: _Scripts | None = None
        self._target = _describe(url)
        self._secrets = _secrets(url)

    def __repr__(self) -> str:
        return f"RedisWindowStore({self._target}, prefix={self._prefix!r})"

    @property
    def target(self) -> str:
        """The server, as messages name it (no password)."""
        return self._target

    @property
    def key_prefix(self) -> str:
        return self._prefix

    def open(self) -> None:
        """Create the client (redis-py connects lazily, on the first command)."""
        if self._client is not None:
            return
        if self._client_factory is not None:
            self._client = self._client_factory()
            return
        try:
            self._client = redis.Redis.from_url(
                self._url,
                socket_timeout=5,
                socket_connect_timeout=5,
                health_check_interval=30,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            raise SinkConfigurationError(f"invalid Redis URL for {self._target}") from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def check(self) -> None:
        """One PING: SinkConfigurationError for a refused password or user, SinkUnavailableError for no answer."""
        client = self._require_client()
        with self._translate_errors("check"):
            client.ping()

    def server(self) -> tuple[str, str, str]:
        """(product, version, host) of the server: product "redis" or "valkey", its version as INFO says it, and
        the host the client reaches it at (a unix socket's path)."""
        client = self._require_client()
        with self._translate_errors("read"):
            info = client.info("server")
        where = client.connection_pool.connection_kwargs
        host = str(where.get("host") or where.get("path", ""))  # a unix socket: its path
        if "valkey_version" in info:
            return "valkey", str(info["valkey_version"]), host
        return "redis", str(info.get("redis_version", "")), host

    def _require_client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("RedisWindowStore is not open: call open() first")
        return self._client

    def write(self, rows: Sequence[WindowRow]) -> None:
        """Write rows and their index entries with a server-side script (WRITE_ROWS), each call atomic and
        of at most ROWS_PER_SCRIPT rows, so that a window of 10,000 event types costs a few commands, not
        six per row packed and parsed in Python. Later rows win for a window given twice, in the hash and
        in the index alike (within a call; rows are written in order across calls)."""
        if not rows:
            return
        for chunk in _chunks(rows):
            self._write_window_rows(chunk)
        logger.debug("wrote %d window rows to %s", len(rows), self._target)

    def _write_window_rows(self, rows: Sequence[WindowRow]) -> None:
        client = self._require_client()
        prefix = self._prefix
        entries: list[list[str | bytes]] = []
        by_types: dict[str, dict[str, int]] = {}
        for row in rows:
            window, event_type, start_ms = row.window, row.event_type, row.window_start_ms
            entries.append([window_hash_key(prefix, window, event_type, start_ms),
                            latest_key(prefix, window, event_type), str(int(start_ms)), row_to_json(row).decode(),
                            *row_to_hash(row).values()])
            types = by_types.setdefault(types_key(prefix, window), {})
            types[event_type] = max(types.get(event_type, start_ms), start_ms)
        indexes = [[index, [item for event_type, start_ms in types.items()
                            for item in (str(int(start_ms)), event_type)]] for index, types in by_types.items()]
        body = msgspec.msgpack.encode([list(row_to_hash(rows[0])), entries, indexes])
        with self._translate_errors("write"):
            self._scripts(client).write_rows(args=[self._ttl_ms, self._latest_n, MAX_INDEXED_TYPES, body])

    def write_aggregates(self, rows: Sequence[AggregateRow], layout: AggregateLayout, output: str) -> None:
        """Write a spec's rows as its Redis output says (aggregations/spec.py REDIS_OUTPUTS): `every` window's
        hash and the key's latest-windows index, or only the `latest` window in that index, in one call of
        the same script as write(); `off` writes nothing."""
        if not rows or output == "off":
            return
        prefix, every = self._prefix, output == "every"
        for chunk in _chunks(rows):  # one script call's entries in memory at a time
            self._write_aggregate_entries([
                [aggregate_hash_key(prefix, row.aggregation, row.window, row.key, row.window_start_ms) if every
                 else "", aggregate_latest_key(prefix, row.aggregation, row.window, row.key),
                 str(int(row.window_start_ms)), aggregate_row_to_json(row, layout).decode(),
                 *(aggregate_row_to_hash(row, layout).values() if every else ())] for row in chunk], layout, every)
        logger.debug("wrote %d rows of %s to %s", len(rows), rows[0].aggregation, self._target)

    def write_aggregate_columns(self, columns: AggregateColumns, layout: AggregateLayout, output: str) -> None:
        """write_aggregates(columns.rows(), layout, output), the keys, index members and hash values of each
        script call's rows built from the columns, not row by row."""
        if not len(columns) or output == "off":
            return
        prefix, every = self._prefix, output == "every"
        aggregation, window, start = columns.aggregation, columns.window, str(int(columns.window_start_ms))
        for first in range(0, len(columns), ROWS_PER_SCRIPT):  # what one call takes, no more in memory at once
            chunk = columns.part(first, first + ROWS_PER_SCRIPT)
            keys = encode_keys(chunk.parts, len(chunk))
            latest = aggregate_latest_keys(prefix, aggregation, window, keys)
            members = [member.decode() for member in aggregate_columns_to_json(chunk, layout)]
            if every:
                entries = [[hash_key, index, start, member, *values] for hash_key, index, member, values in zip(
                    aggregate_hash_keys(prefix, aggregation, window, keys, chunk.window_start_ms), latest, members,
                    aggregate_columns_to_hashes(chunk, layout), strict=True)]
            else:
                entries = [["", index, start, member] for index, member in zip(latest, members, strict=True)]
            self._write_aggregate_entries(entries, layout, every)
        logger.debug("wrote %d rows of %s to %s", len(columns), aggregation, self._target)

    def _write_aggregate_entries(self, entries: list[list[str]], layout: AggregateLayout, every: bool) -> None:
        """One call of the write script (WRITE_ROWS) with these rows, at most ROWS_PER_SCRIPT; `every` keeps
        latest_n windows per key, `latest` one."""
        client = self._require_client()
        body = msgspec.msgpack.encode([list(layout_fields(layout)) if every else [], entries, []])
        with self._translate_errors("write"):
            self._scripts(client).write_rows(args=[self._ttl_ms, self._latest_n if every else 1, MAX_INDEXED_TYPES,
                                                   body])

    def latest_aggregates(self, aggregation: str, window: str, key: Sequence[str | int | bool | None], n: int,
                          layout: AggregateLayout) -> list[AggregateRow]:
        """Up to n latest windows of one key of a spec's aggregation, newest first."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        client = self._require_client()
        with self._translate_errors("read"):
            members = client.zrevrange(aggregate_latest_key(self._prefix, aggregation, window, key), 0, n - 1)
        return [aggregate_row_from_json(member, layout) for member in members]

    def _scripts(self, client: redis.Redis) -> _Scripts:
        if self._registered is None or self._registered.client is not client:
            self._registered = _Scripts(client, client.register_script(WRITE_ROWS))
        return self._registered

    def write_alerts(self, alerts: Sequence[tuple[str, str, int, bytes]]) -> None:
        """Alerts as (state, field, window_end_ms, JSON), in order, in ONE transactional pipeline. Idempotent:
        a replay writes the same members and repeats the same sets and deletes in the same order."""
        if not alerts:
            return
        client = self._require_client()
        active, recent = alerts_active_key(self._prefix), alerts_recent_key(self._prefix)
        with self._translate_errors("write"), client.pipeline(transaction=True) as pipe:
            for state, field_name, end_ms, body in alerts:
                if state == "firing":
                    pipe.hset(active, field_name, body)
                else:
                    pipe.hdel(active, field_name)
                pipe.zadd(recent, {body: end_ms})
            pipe.zremrangebyrank(recent, 0, -(MAX_RECENT_ALERTS + 1))
            pipe.pexpire(recent, self._ttl_ms)
            pipe.execute()

    def read_alerts(self, n: int) -> tuple[list[bytes], list[bytes]]:
        """The active alerts (unordered) and up to n recent ones, newest first, in one round trip."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        client = self._require_client()
        with self._translate_errors("read"), client.pipeline(transaction=False) as pipe:
            pipe.hvals(alerts_active_key(self._prefix))
            pipe.zrevrange(alerts_recent_key(self._prefix), 0, n - 1)
            active, recent = pipe.execute()
        return list(active), list(recent)

    def record_batch_run(self, run: BatchRun) -> None:
        """Add one batch run to the status hash, in ONE transaction (its times set, its counts added)."""
        fields, counters = batch_run_to_hash(run)
        key = batch_status_key(self._prefix)
        client = self._require_client()
        with self._translate_errors("write"), client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            for name, amount in counters.items():
                pipe.hincrby(key, name, amount)
            pipe.execute()

    def read_batch_status(self) -> BatchStatus | None:
        """The batch job's status, or None before its first run."""
        client = self._require_client()
        with self._translate_errors("read"):
            fields = client.hgetall(batch_status_key(self._prefix))
        return batch_status_from_hash(fields)

    def get_window(self, window: str, event_type: str, window_start_ms: int) -> WindowRow | None:
        client = self._require_client()
        with self._translate_errors("read"):
            fields = client.hgetall(window_hash_key(self._prefix, window, event_type, window_start_ms))
        return row_from_hash(fields) if fields else None

    def latest(self, window: str, event_type: str, n: int) -> list[WindowRow]:
        """Up to n latest windows, newest first, in one round trip (at most latest_n exist)."""
        if n < 1:
            # ZREVRANGE key 0 -1 would mean "everything", not "nothing".
            raise ValueError(f"n must be >= 1, got {n}")
        client = self._require_client()
        with self._translate_errors("read"):
            members = client.zrevrange(latest_key(self._prefix, window, event_type), 0, n - 1)
        return [row_from_json(member) for member in members]

    def event_types(self, window: str, n: int) -> list[str]:
        """Up to n event types with closed windows, most recently active first."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        client = self._require_client()
        with self._translate_errors("read"):
            members = client.zrevrange(types_key(self._prefix, window), 0, n - 1)
        return [member.decode() for member in members]

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _translate_errors(self, operation: str) -> Iterator[None]:
        """Typed errors with redacted messages; the original is not chained (``from None``),
        so no traceback can carry an unredacted message."""
        try:
            yield
        except REDIS_PERMANENT_ERRORS as exc:
            message = f"Redis {operation} at {self._target} refused: {type(exc).__name__}: {self._redact(str(exc))}"
            raise SinkConfigurationError(message) from None
        except REDIS_TRANSIENT_ERRORS as exc:
            message = f"Redis {operation} at {self._target} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            raise SinkUnavailableError(message) from None
        except redis.exceptions.RedisError as exc:
            message = f"Redis {operation} at {self._target} failed: {type(exc).__name__}: {self._redact(str(exc))}"
            if isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(REDIS_TRANSIENT_REPLIES):
                raise SinkUnavailableError(message) from None
            raise SinkConfigurationError(message) from None
