"""Plain-Python references and comparisons shared by the tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["exact", "nearest_rank"]


def nearest_rank(values: Iterable[float], percent: int) -> float:
    """The smallest value with at least percent% of the values at or below it: v[ceil(p·n/100)] of the
    sorted values (1-based), as the batch layer's percentiles are defined."""
    ordered = sorted(values)
    rank = -(-percent * len(ordered) // 100)
    return ordered[max(rank, 1) - 1]


def exact(rows: Sequence[Sequence[object] | None]) -> list[tuple[str, ...] | None]:
    """Rows compared through repr: -0.0 != 0.0 and every float bit for bit, unlike with ==."""
    return [None if row is None else tuple(repr(value) for value in row) for row in rows]
