"""A list encoded in as few bodies as a byte limit allows: the partials messages and the packs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, TypeVar

__all__ = ["encode_in_runs"]

T = TypeVar("T")


# A list of more items than this is first measured by encoding its first SAMPLE items, so that one too
# long for a body is cut before it is encoded whole, not after. Cut to fill FILL of the limit, so that
# a run of longer items than the sample's still fits at the first cut, mostly.
SAMPLE: Final = 64
FILL: Final = 0.8


def encode_in_runs(items: Sequence[T], encode: Callable[[Sequence[T]], bytes],
                   limit: int) -> list[tuple[int, int, bytes]]:
    """(start, stop, encode(items[start:stop])) for consecutive runs of `items`, in order, each body at
    most `limit` bytes unless it is one item. A long list's size is estimated from its first SAMPLE
    items; one that fits (or a short list) is encoded whole, and if that is too long, cut into runs
    sized from its length, each cut again only if it still does not fit. The items are encoded about
    once: encoding the whole first and then its runs cost stage 1's flushes and stage 2's packs
    twice their encoding at 100,000 keys (NOTES.md, Cost per event)."""
    if len(items) > 2 * SAMPLE:
        estimate = len(encode(items[:SAMPLE])) * len(items) // SAMPLE
        if estimate > limit:
            return _in_runs(items, encode, limit, -(-estimate // int(limit * FILL)))
    body = encode(items)
    if len(body) <= limit or len(items) <= 1:
        return [(0, len(items), body)]
    return _in_runs(items, encode, limit, -(-len(body) // limit) + 1)


def _in_runs(items: Sequence[T], encode: Callable[[Sequence[T]], bytes], limit: int,
             parts: int) -> list[tuple[int, int, bytes]]:
    """encode_in_runs of `items` cut into `parts` runs of equal length."""
    size = -(-len(items) // min(len(items), parts))
    runs = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        runs += [(start + a, start + b, run) for a, b, run in encode_in_runs(chunk, encode, limit)]
    return runs
