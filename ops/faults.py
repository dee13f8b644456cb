"""Fault injection for tests: `FAULT_INJECTION=point@N` makes the Nth call of a named step raise.

The steps are the ones whose failure matters for exactly-once (a send in the middle of a
batch, an export, an archive write). Production runs with none (the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

POINTS = ("ingest.send", "export.write", "archive.write", "alerts.send")


class InjectedFaultError(RuntimeError):
    """Raised where FAULT_INJECTION asked for a failure."""


def parse_faults(text: str) -> dict[str, int]:
    """`point@N[,point@N...]` -> {point: N}; empty text means no faults."""
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, sep, number = item.partition("@")
        if point not in POINTS or not sep or not number.isdigit() or int(number) < 1:
            raise ValueError(f"expected point@N with point one of {', '.join(POINTS)} and N >= 1, got {item!r}")
        plan[point] = int(number)
    return plan


@dataclass(slots=True)
class Faults:
    plan: Mapping[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)

    def check(self, point: str) -> None:
        target = self.plan.get(point)
        if target is None:
            return
        calls = self.calls[point] = self.calls.get(point, 0) + 1
        if calls == target:
            raise InjectedFaultError(f"fault injected at call {calls} of {point} (FAULT_INJECTION)")
