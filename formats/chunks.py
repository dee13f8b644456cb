"""A list encoded in as few bodies as a byte limit allows: the partials messages and the packs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["encode_in_runs"]

T = TypeVar("T")


def encode_in_runs(items: Sequence[T], encode: Callable[[Sequence[T]], bytes],
                   limit: int) -> list[tuple[int, int, bytes]]:
    """(start, stop, encode(items[start:stop])) for consecutive runs of `items`, in order, each body at
    most `limit` bytes unless it is one item. Encodes the whole once, then, if it is too long, runs
    sized from its length (one more than the bytes need, so that most fit at the first cut), each
    cut again only if it still does not fit: about twice the encoding, where halving until each
    fits cost one encoding per level (four for a 2 MB window of 10,000 event types)."""
    body = encode(items)
    if len(body) <= limit or len(items) <= 1:
        return [(0, len(items), body)]
    parts = min(len(items), -(-len(body) // limit) + 1)
    size = -(-len(items) // parts)
    runs = []
    for start in range(0, len(items), size):
        chunk = items[start:start + size]
        runs += [(start + a, start + b, run) for a, b, run in encode_in_runs(chunk, encode, limit)]
    return runs
