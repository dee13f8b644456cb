"""The Redis layout: every key the pipeline writes, and what each holds (KEYS_VERSION 1).

Keys (``P`` is the configured key prefix, ``enc`` is ``formats.keys.encode_key_part``)::

    P win:{enc(window)}:{enc(event_type)}:{window_start_ms}
        hash of one closed window: fields window, event_type, window_start_ms,
        window_end_ms, count, sum, min, max, mean, revision, late_count (formats/rows.py;
        a hash without the last two reads as revision 0). Values are strings: ints as str(int),
        floats as repr(float), so float(value) gives back the exact float (also -0.0, inf).
    P latest:{enc(window)}:{enc(event_type)}
        sorted set indexing the latest windows: score = window_start_ms, member = the
        row's canonical JSON (``formats.rows.row_to_json``: compact, sorted keys). At most
        ``latest_n`` members: ``ZREVRANGE key 0 N-1`` reads the latest N rows in one round
        trip with no follow-up HGETALLs.

    P types:{enc(window)}
        sorted set of the event types with closed windows: score = the latest
        window_start_ms written for that type, member = the event type itself. Lets a
        reader list the most recently active event types without a SCAN. Capped at
        ``MAX_INDEXED_TYPES`` members (the least recently active are dropped).

    P alerts:active
        hash of the alerts firing now: field = ``{rule}:{enc(event_type)}``, value = the
        alert's canonical JSON (formats/alerts.py); a resolution deletes its field. No TTL:
        an alert fires until it resolves.
    P alerts:recent
        sorted set of the latest ``MAX_RECENT_ALERTS`` alerts, fired and resolved: score =
        window_end_ms, member = the alert's JSON. TTL ``ttl_ms``, refreshed by every write.

    P batch:status
        hash of the batch job's status (``faust -A app batch`` writes it at the end of each
        run; every worker's /metrics exports it): ``last_success_ms``, ``last_failure_ms``,
        ``duration_ms``, ``last_sealed_hour_ms`` and counters summed over runs
        (formats/batch.py ``BatchRun``, ``BATCH_COUNTERS``). No TTL: runs may be a day apart.

    P agg:{enc(aggregation)}:{enc(window)}:{key}:{window_start_ms}
        hash of one closed window of a spec's aggregation (formats/aggregates.py), when its
        ``redis`` output is ``every``. ``key`` is its parts, each encoded by its type (a string by
        ``enc``, an integer in decimal, a boolean ``true``/``false``, a null ``%00``), joined by ``:``.
    P agglatest:{enc(aggregation)}:{enc(window)}:{key}
        sorted set of the key's latest windows, as ``latest:`` (``every``: ``latest_n`` of them;
        ``latest``: the newest one only, and no hash).

(no space between ``P`` and the rest: ``events:win:tumbling_1m:click:1763251140000``).
Both keys get a TTL of ``ttl_ms``, refreshed by every write.

``enc`` output never contains ``:``, glob characters (``* ? [ ]``) or hash tags (``{ }``),
and is injective, so no event type or window name can forge another key, match a
foreign SCAN pattern or leave the prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from formats.keys import encode_key_part

__all__ = ["KEYS_VERSION", "aggregate_hash_key", "aggregate_hash_keys", "aggregate_latest_key",
           "aggregate_latest_keys", "alerts_active_key", "alerts_recent_key", "batch_status_key", "encode_key",
           "encode_keys", "latest_key", "types_key", "window_hash_key"]

KEYS_VERSION: Final = 1


def window_hash_key(prefix: str, window: str, event_type: str, window_start_ms: int) -> str:
    """Key of the hash of one closed window."""
    return f"{prefix}win:{encode_key_part(window)}:{encode_key_part(event_type)}:{int(window_start_ms)}"


def latest_key(prefix: str, window: str, event_type: str) -> str:
    """Key of the latest-windows index of one (window, event_type)."""
    return f"{prefix}latest:{encode_key_part(window)}:{encode_key_part(event_type)}"


def types_key(prefix: str, window: str) -> str:
    return f"{prefix}types:{encode_key_part(window)}"


def alerts_active_key(prefix: str) -> str:
    return f"{prefix}alerts:active"


def alerts_recent_key(prefix: str) -> str:
    return f"{prefix}alerts:recent"


def batch_status_key(prefix: str) -> str:
    return f"{prefix}batch:status"


def _encode_part(part: str | int | bool | None) -> str:
    return ("%00" if part is None else ("true" if part else "false") if isinstance(part, bool)
            else str(part) if isinstance(part, int) else encode_key_part(part))


def encode_key(parts: Sequence[str | int | bool | None]) -> str:
    """A spec's key in a Redis key: each part encoded by its type, joined by ':' (a part's type is fixed
    by the spec, so the encoding is injective; no encoded part holds ':')."""
    return ":".join(map(_encode_part, parts))


def encode_keys(parts: Sequence[Sequence[str | int | bool | None]], n: int) -> list[str]:
    """encode_key of each of n keys given as columns (one per part)."""
    if not parts:
        return [""] * n
    columns = [list(map(_encode_part, column)) for column in parts]
    return columns[0] if len(columns) == 1 else [":".join(key) for key in zip(*columns, strict=True)]


def aggregate_hash_key(prefix: str, aggregation: str, window: str, parts: Sequence[str | int | bool | None],
                       window_start_ms: int) -> str:
    return aggregate_hash_keys(prefix, aggregation, window, [encode_key(parts)], window_start_ms)[0]


def aggregate_latest_key(prefix: str, aggregation: str, window: str, parts: Sequence[str | int | bool | None]) -> str:
    return aggregate_latest_keys(prefix, aggregation, window, [encode_key(parts)])[0]


def aggregate_hash_keys(prefix: str, aggregation: str, window: str, keys: Sequence[str], window_start_ms: int
                        ) -> list[str]:
    """aggregate_hash_key of each key already encoded by encode_keys."""
    head, tail = f"{prefix}agg:{encode_key_part(aggregation)}:{encode_key_part(window)}:", f":{int(window_start_ms)}"
    return [f"{head}{key}{tail}" for key in keys]


def aggregate_latest_keys(prefix: str, aggregation: str, window: str, keys: Sequence[str]) -> list[str]:
    """aggregate_latest_key of each key already encoded by encode_keys."""
    head = f"{prefix}agglatest:{encode_key_part(aggregation)}:{encode_key_part(window)}:"
    return [head + key for key in keys]
