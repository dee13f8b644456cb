"""`faust -A app produce`: writes demo events to the events topic at a steady rate."""

from __future__ import annotations

import asyncio
import time

from faust.cli import AppCommand, option

from loadgen import DEFAULT_TYPES, EventGenerator

TICK_S = 0.05
REPORT_EVERY_S = 5.0


class produce(AppCommand):  # noqa: N801 - the class name is the subcommand name
    """Produce demo events (user_id, event_type, timestamp, value) to the events topic."""

    options = [
        option("--rate", type=int, default=2000, show_default=True, help="Events per second."),
        option("--count", type=int, default=0, help="Stop after this many events (0: no limit)."),
        option("--duration", type=float, default=0.0, help="Stop after this many seconds (0: no limit)."),
        option("--users", type=int, default=1000, show_default=True, help="Distinct user ids."),
        option("--types", default=DEFAULT_TYPES, show_default=True, help="Event types and weights."),
        option("--seed", type=int, default=0, show_default=True, help="Random seed."),
    ]

    async def run(self, rate: int, count: int, duration: float, users: int, types: str, seed: int) -> None:
        if rate < 1:
            raise self.UsageError("--rate must be at least 1")
        generator = EventGenerator(seed=seed, users=users, types=types)
        topic = self.app.topic(self.app.settings.kafka.topic_events,  # type: ignore[attr-defined]
                               key_serializer="raw", value_serializer="raw")
        await topic.maybe_declare()
        started = time.monotonic()
        sent = 0
        next_report = started + REPORT_EVERY_S
        while (not count or sent < count) and (not duration or time.monotonic() - started < duration):
            due = int((time.monotonic() - started) * rate) + 1
            if count:
                due = min(due, count)
            for _ in range(due - sent):
                key, value = generator.record(int(time.time() * 1000))
                await topic.send(key=key, value=value)
            sent = max(sent, due)
            now = time.monotonic()
            if now >= next_report:
                self.say(f"produced {sent} events ({sent / (now - started):.0f} events/s)")
                next_report = now + REPORT_EVERY_S
            await asyncio.sleep(TICK_S)
        await self.app.producer.flush()
        self.say(f"produced {sent} events in {time.monotonic() - started:.1f}s")
