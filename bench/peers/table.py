"""The peers' table: events/s per round, median, and this project's median over each contender's."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

PROJECT = "this project"


@dataclass(frozen=True)
class Contender:
    name: str
    rates: list[float | None]  # events/s per round; None for a round that failed
    check: str  # what the totals check found, or why there is none
    dropped: str  # events not counted, per window kind


def median(rates: list[float | None]) -> float | None:
    """The median of the rounds that finished, None if none did."""
    done = [rate for rate in rates if rate is not None]
    return statistics.median(done) if done else None


def _rate(rate: float | None) -> str:
    return "failed" if rate is None else f"{rate:,.0f}"


def format_table(contenders: list[Contender]) -> str:
    """A markdown table; the ratio is this project's median over the contender's median."""
    rounds = max(len(c.rates) for c in contenders)
    project = next((median(c.rates) for c in contenders if c.name == PROJECT), None)
    header = ["contender", *(f"round {i + 1}" for i in range(rounds)), "median", "this project ÷ contender",
              "window totals", "dropped (tumbling / hopping)"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for contender in contenders:
        own = median(contender.rates)
        ratio = f"{project / own:.2f}×" if project is not None and own else "n/a"
        cells = [contender.name, *(_rate(rate) for rate in contender.rates),
                 *([""] * (rounds - len(contender.rates))), f"**{_rate(own)}**", ratio, contender.check,
                 contender.dropped]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
