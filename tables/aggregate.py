"""Mergeable count/sum/min/max summary of event values."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Aggregate"]


def _as_float(value: object, field: str) -> float:
    # bool is an int subclass; a stored True is corruption, not 1.0.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"aggregate {field} must be a number, got {type(value).__name__}")
    return float(value)


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Summary of at least one value; there is deliberately no empty aggregate.

    Float addition is not associative, so ``sum`` depends on merge order:
    ``a.merge(b)`` computes ``a.sum + b.sum`` (left to right). Callers that need
    reproducible sums must merge in a deterministic order (e.g. by offset).
    ``sum`` may overflow to ``inf`` for values near the float maximum.
    """

    count: int
    sum: float
    min: float
    max: float

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            raise ValueError(f"aggregate count must be an int >= 1, got {self.count!r}")
        # Also rejects NaN, which compares false with everything.
        if not self.min <= self.max:
            raise ValueError(f"aggregate min {self.min!r} must be <= max {self.max!r}")

    @classmethod
    def of(cls, value: float) -> Aggregate:
        number = float(value)
        return cls(count=1, sum=number, min=number, max=number)

    def merge(self, other: Aggregate) -> Aggregate:
        return Aggregate(
            count=self.count + other.count,
            sum=self.sum + other.sum,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def add(self, value: float) -> Aggregate:
        return self.merge(Aggregate.of(value))

    @property
    def mean(self) -> float:
        return self.sum / self.count

    def to_list(self) -> list[int | float]:
        """Compact JSON-friendly table value ``[count, sum, min, max]``."""
        return [self.count, self.sum, self.min, self.max]

    @classmethod
    def from_list(cls, data: Sequence[object]) -> Aggregate:
        """Inverse of :meth:`to_list`; raises ValueError on malformed input."""
        if not isinstance(data, (list, tuple)) or len(data) != 4:
            raise ValueError("aggregate must be a sequence [count, sum, min, max]")
        count = data[0]
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"aggregate count must be an int, got {type(count).__name__}")
        return cls(
            count=count,
            sum=_as_float(data[1], "sum"),
            min=_as_float(data[2], "min"),
            max=_as_float(data[3], "max"),
        )
