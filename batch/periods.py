"""Hours and days of event time (UTC), and the times --from/--to accept. Pure functions."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from formats.lake import DAY_MS, HOUR_MS, PERIOD_MS

__all__ = ["Period", "day_of", "hour_of", "last_sealed_hour", "parse_time",
           "periods_overlapping"]

_LENGTH_MS: Final = PERIOD_MS
_EPOCH_MS = re.compile(r"[0-9]{1,15}", re.ASCII)
# Dates from 2000 (the pipeline refuses older events) to 9999.
_MIN_MS: Final = 946_684_800_000


@dataclass(frozen=True, slots=True)
class Period:
    """One hour (`kind` "hourly") or one UTC day ("daily"): [start_ms, end_ms)."""

    kind: str
    start_ms: int

    def __post_init__(self) -> None:
        if self.kind not in _LENGTH_MS or self.start_ms % _LENGTH_MS[self.kind]:
            raise ValueError(f"not the start of a period: {self.kind} {self.start_ms}")

    @staticmethod
    def hourly(epoch_ms: int) -> Period:
        return Period("hourly", hour_of(epoch_ms))

    @staticmethod
    def daily(epoch_ms: int) -> Period:
        return Period("daily", day_of(epoch_ms))

    def order(self) -> tuple[int, int]:
        """Hours before days: a day is computed after its hours in the same run."""
        return (0 if self.kind == "hourly" else 1, self.start_ms)

    @property
    def end_ms(self) -> int:
        return self.start_ms + _LENGTH_MS[self.kind]

    def hours(self) -> range:
        return range(self.start_ms, self.end_ms, HOUR_MS)

    def label(self) -> str:
        at = datetime.fromtimestamp(self.start_ms / 1000, tz=timezone.utc)
        return f"hour {at:%Y-%m-%dT%H}Z" if self.kind == "hourly" else f"day {at:%Y-%m-%d}"


def hour_of(epoch_ms: int) -> int:
    return epoch_ms - epoch_ms % HOUR_MS


def day_of(epoch_ms: int) -> int:
    return epoch_ms - epoch_ms % DAY_MS


def parse_time(text: str) -> int:
    """An instant for --from/--to: epoch milliseconds, or ISO-8601 (a date, or a date and time; no zone
    means UTC, as for events). Raises ValueError saying what is expected."""
    stripped = text.strip()
    if _EPOCH_MS.fullmatch(stripped):
        epoch_ms = int(stripped)
    else:
        try:
            at = datetime.fromisoformat(stripped.replace("Z", "+00:00") if stripped.endswith("Z") else stripped)
        except ValueError:
            raise ValueError(f"expected ISO-8601 such as 2026-11-01T22:00Z or 2026-11-01, or epoch milliseconds "
                             f"(got {text!r})") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=timezone.utc)
        epoch_ms = int(at.timestamp() * 1000)
    if epoch_ms < _MIN_MS:
        raise ValueError(f"expected a time from 2000-01-01 on (got {text!r})")
    return epoch_ms


def last_sealed_hour(sealed_until_ms: int) -> int:
    """The start of the newest hour ending at or before the sealing bound."""
    return hour_of(sealed_until_ms) - HOUR_MS


def periods_overlapping(hours: list[int], from_ms: int | None, to_ms: int | None) -> list[int]:
    """The hour starts among `hours` whose hour overlaps [from_ms, to_ms) (None: unbounded)."""
    return [h for h in hours
            if (from_ms is None or h + HOUR_MS > from_ms) and (to_ms is None or h < to_ms)]
