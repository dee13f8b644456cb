"""Many window keys of a stage's state in few changelog records: packs.

With one changelog record per window key, a flush that changed 10,000 keys (one per event
type) costs 10,000 sends, which is what capped the pipeline with many event types. A
flush instead writes the keys it changed as packs: records of the keys of one window
instance (window, start), up to PACK_BYTES each, under a new sequence number. A key's
value is the one in the newest pack holding it. A pack whose keys are all current in newer
packs, or forgotten, is deleted (a tombstone), so that compaction still bounds the
changelog by the open keys. Packs hold one window instance each because a stage drops
whole windows (closed, exported, or no longer configured): forgetting a window's keys then
empties its packs, and no pack of a dropped window outlives it to bring it back.

Restoring reads the packs in sequence order, each over the older: a prefix of the writes
gives each key its newest value in the prefix. A stage writes its position only after the
packs of the records it covers are acknowledged (tables/store.py), so what a cut-off flush
lacks is redone from the position, as with one record per key. A key forgotten whose pack
survives a crash comes back at restore only if a pack tombstone was cut off: the stages
drop such keys again by the rule that dropped them (the frontier, the export ledger, the
configured windows), whose record precedes the forget. Packs are deleted oldest first, so a key
never comes back with a value older than its newest.

The pack record: key `prefix + 16 hex digits of the sequence number` (sorted as written). Stage 2's
value (this class) is the JSON object `{"w": window, "s": start_ms, "e": [[event_type, value], ...]}`.
Stage 1 keeps the same books in its columnar state (tables/partials.PartitionPartials), and its pack
is the partials message it sent, the same bytes (models.encode_partial_columns).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from chunks import encode_in_runs
from tables.partials import PartialKey

__all__ = ["PACK_BYTES", "Packs", "pack_key", "packs_in"]

# A pack's value stays well below Kafka's default 1 MiB record limit (event types are at most
# 256 characters, so an entry is a few KB at most).
PACK_BYTES = 256 * 1024

Put = Callable[[bytes, bytes | None], Awaitable[None]]


def pack_key(prefix: bytes, seq: int) -> bytes:
    return prefix + b"%016x" % seq


def packs_in(prefix: bytes, items: Mapping[bytes, bytes]) -> dict[int, bytes]:
    """The packs among a stage's stored items, by sequence number."""
    return {int(key[len(prefix):], 16): value for key, value in items.items() if key.startswith(prefix)}


class Packs:
    """Which pack holds each key's newest value, and how many current keys each pack holds."""

    __slots__ = ("prefix", "_holder", "_live", "_next_seq", "_empty")

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self._holder: dict[PartialKey, int] = {}  # key -> sequence number of its newest pack
        self._live: dict[int, int] = {}  # pack -> how many keys it holds the newest value of
        self._next_seq = 0
        self._empty: list[int] = []  # packs restored with no current key: deleted at the next write

    @classmethod
    def restored(cls, prefix: bytes, items: Mapping[bytes, bytes]) -> tuple[Packs, dict[PartialKey, Any]]:
        """The packs among a stage's stored items, and every key's newest value."""
        packs = cls(prefix)
        found = sorted(packs_in(prefix, items).items())
        values: dict[PartialKey, Any] = {}
        for seq, raw in found:
            body = orjson.loads(raw)
            window, start_ms = str(body["w"]), int(body["s"])
            packs._live[seq] = 0
            for event_type, value in body["e"]:
                key = PartialKey(window, start_ms, str(event_type))
                packs._take(key, seq)
                values[key] = value
        packs._next_seq = found[-1][0] + 1 if found else 0
        packs._empty = [seq for seq, live in packs._live.items() if live == 0]
        for seq in packs._empty:
            del packs._live[seq]
        return packs, values

    def __len__(self) -> int:
        """The number of packs stored."""
        return len(self._live) + len(self._empty)

    def _take(self, key: PartialKey, seq: int) -> int | None:
        """Make `seq` the holder of `key`; the pack that held it before, if that one is now empty."""
        old = self._holder.get(key)
        self._holder[key] = seq
        self._live[seq] += 1
        if old is None:
            return None
        left = self._live[old] - 1
        if left:
            self._live[old] = left
            return None
        del self._live[old]
        return old

    def _pack_key(self, seq: int) -> bytes:
        return pack_key(self.prefix, seq)

    async def write(self, put: Put, changed: Iterable[tuple[PartialKey, Any]]) -> None:
        """Write the new values of `changed` keys in packs, then delete the packs they emptied."""
        by_window: dict[tuple[str, int], tuple[list[PartialKey], list[list[Any]]]] = {}
        for key, value in changed:
            group = by_window.get((key.window, key.start_ms))
            if group is None:
                group = by_window[(key.window, key.start_ms)] = ([], [])
            group[0].append(key)
            group[1].append([key.event_type, value])
        emptied, self._empty = self._empty, []
        for (window, start_ms), (keys, entries) in by_window.items():
            emptied += await self._put_packs(put, window, start_ms, keys, entries)
        await self._delete(put, emptied)

    async def _put_packs(self, put: Put, window: str, start_ms: int, keys: list[PartialKey],
                         entries: list[list[Any]]) -> list[int]:
        """These entries in as few packs as PACK_BYTES allows; the packs they emptied."""
        emptied = []
        runs = encode_in_runs(entries, lambda run: orjson.dumps({"w": window, "s": start_ms, "e": run}), PACK_BYTES)
        for start, stop, body in runs:
            emptied += await self._put_pack(put, keys[start:stop], body)
        return emptied

    async def _put_pack(self, put: Put, keys: list[PartialKey], body: bytes) -> list[int]:
        seq = self._next_seq
        self._next_seq += 1
        await put(self._pack_key(seq), body)
        holder, live = self._holder, self._live
        before = Counter(map(holder.get, keys))
        holder.update(dict.fromkeys(keys, seq))
        live[seq] = len(keys)
        emptied = []
        for old, taken in before.items():
            if old is None:
                continue
            left = live[old] - taken
            if left:
                live[old] = left
            else:
                del live[old]
                emptied.append(old)
        return emptied

    async def forget(self, put: Put, keys: Iterable[PartialKey]) -> None:
        """Drop keys from the state: the packs they leave empty are deleted."""
        emptied, self._empty = self._empty, []
        for key in keys:
            seq = self._holder.pop(key, None)
            if seq is None:
                continue
            left = self._live[seq] - 1
            if left:
                self._live[seq] = left
            else:
                del self._live[seq]
                emptied.append(seq)
        await self._delete(put, emptied)

    async def _delete(self, put: Put, emptied: list[int]) -> None:
        """Oldest first: a crash part way leaves each key of a dropped window with its newest value or
        none, never an older one that the deleted newer pack had replaced."""
        for seq in sorted(emptied):
            await put(self._pack_key(seq), None)
