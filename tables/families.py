"""Window families: the unit the stages keep, close and export state by.

A family is one window of one aggregation (aggregations/spec.py): its instances are (family, start),
each holding a key per slot and M measures per key. Without a spec, the article's job has one family
per window, named as the window, with the event type as its key and the value as its one measure:
every name and byte it wrote stays the same. A spec's families are named `aggregation/window` ("/" is
in neither name, so the two parts come back apart), and their keys are the canonical JSON of the key
parts (formats.partials.key_text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aggregations.spec import Aggregation, Spec
from tables.windows import WindowSpec

__all__ = ["Family", "families"]


@dataclass(frozen=True, slots=True)
class Family(WindowSpec):
    """A window of one aggregation (None: the article's job); `name` is the family's, `window` the
    window's own."""

    window: str = ""
    aggregation: Aggregation | None = None

    def __post_init__(self) -> None:
        expected = self.window if self.aggregation is None else f"{self.aggregation.name}/{self.window}"
        if self.name != expected:
            raise ValueError(f"family {self.name!r}: expected the name {expected!r}")
        self._check_size()

    @property
    def measures(self) -> int:
        return 1 if self.aggregation is None else len(self.aggregation.measures)


def families(windows: Sequence[WindowSpec], spec: Spec | None) -> tuple[Family, ...]:
    """The families of the configured windows: one per window without a spec, else one per window of
    each aggregation, in the spec's order."""
    if spec is None:
        return tuple(Family(w.name, w.size_ms, w.step_ms, w.name) for w in windows)
    return tuple(Family(f"{aggregation.name}/{w.name}", w.size_ms, w.step_ms, w.name, aggregation)
                 for aggregation in spec.aggregations for w in windows if w.name in aggregation.windows)
