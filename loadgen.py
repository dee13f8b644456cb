"""Deterministic demo events: the article's schema with weighted event types."""

from __future__ import annotations

import random
from itertools import accumulate

from events import Event, encode_event

DEFAULT_TYPES = "click:6,view:3,purchase:1"


def parse_type_weights(text: str) -> dict[str, float]:
    """`click:6,view:3` -> {'click': 6.0, 'view': 3.0}; a bare name weighs 1."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        value = float(weight) if weight else 1.0
        if not name or not value > 0:
            raise ValueError(f"bad event type weight {item!r}: expected name[:positive weight]")
        weights[name] = value
    if not weights:
        raise ValueError("expected at least one event type")
    return weights


class EventGenerator:
    """Reproducible for a given seed: the same seed and timestamps give the same records."""

    def __init__(self, *, seed: int = 0, users: int = 1000, types: str = DEFAULT_TYPES) -> None:
        if users < 1:
            raise ValueError("users must be at least 1")
        weights = parse_type_weights(types)
        self.users = users
        self._names = list(weights)
        self._cumulative = list(accumulate(weights.values()))
        self._rng = random.Random(seed)

    def event(self, event_ms: int) -> Event:
        rng = self._rng
        event_type = rng.choices(self._names, cum_weights=self._cumulative)[0]
        return Event(
            user_id=f"u{rng.randrange(self.users)}",
            event_type=event_type,
            event_ms=event_ms,
            value=round(rng.uniform(0, 100), 2),
        )

    def record(self, event_ms: int) -> tuple[bytes, bytes]:
        """(key, value) as written to the events topic: key is the user_id."""
        event = self.event(event_ms)
        return event.user_id.encode(), encode_event(event)
