"""`faust -A app produce`: writes demo events to the events topic, with a progress display."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any, TextIO

import click
from faust.cli import AppCommand, option

from agents.runner import exit_with_line
from commands.loadgen import (
    DEFAULT_TYPES,
    EventGenerator,
    Progress,
    RecordSource,
    Send,
    SpecEventGenerator,
    event_limit,
    late_offset_ms,
    parse_fraction,
    parse_type_weights,
    produce_events,
)
from kafka_io.clients import BrokerAccessError, Producer, check_access, client_options
from kafka_io.topics import TopicLayoutError, TopicSpec, ensure_topics

REPORT_EVERY_S = 5.0  # a plain progress line this often when stdout is not a terminal
REDRAW_EVERY_S = 0.2  # the in-place status line on a terminal
BAR_CELLS = 10


# -- option checks: at parse time, so a bad value is a one-line click usage error ---------


class _FractionType(click.ParamType):
    name = "FRACTION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Fraction:
        if isinstance(value, Fraction):
            return value
        try:
            return parse_fraction(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _check_types(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_type_weights(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def _check_anomaly_sum(ctx: click.Context, param: click.Parameter, value: Fraction) -> Fraction:
    # Whichever of the two click processes second sees the other in ctx.params.
    other = "late" if param.name == "malformed" else "malformed"
    if other in ctx.params and value + ctx.params[other] > 1:
        raise click.UsageError(
            f"--malformed plus --late must be at most 1 (got {float(ctx.params[other] + value):g})", ctx)
    return value


# -- progress display ---------------------------------------------------------------------


def _done_fraction(progress: Progress, total_events: int, duration_s: float) -> float | None:
    """How far along the run is, None when it has no end."""
    shares = []
    if total_events:
        shares.append(progress.produced / total_events)
    if duration_s:
        shares.append(progress.elapsed_s / duration_s)
    return min(1.0, max(shares)) if shares else None


def status_line(progress: Progress, *, rate: int, total_events: int, duration_s: float) -> str:
    """The terminal's one-line status: bar and percent when the run has an end."""
    parts = []
    done = _done_fraction(progress, total_events, duration_s)
    if done is not None:
        cells = int(done * BAR_CELLS)
        parts.append(f"[{'#' * cells}{'-' * (BAR_CELLS - cells)}] {done:4.0%}")
    parts.append(f"{progress.elapsed_s:.1f}s")
    parts.append(f"{progress.produced:,}/{total_events:,} events" if total_events else f"{progress.produced:,} events")
    achieved = f"{progress.events_per_s:,.0f}"
    parts.append(f"{achieved}/{rate:,} ev/s" if rate else f"{achieved} ev/s")  # achieved/target
    parts.append(f"malformed {progress.malformed:,}  late {progress.late:,}")
    return "  ".join(parts)


def report_line(progress: Progress) -> str:
    """The periodic line for logs (not a terminal)."""
    return (f"produced {progress.produced} events ({progress.events_per_s:.0f} events/s, "
            f"{progress.malformed} malformed, {progress.late} late)")


def summary_line(progress: Progress) -> str:
    return (f"produced {progress.produced} events ({progress.malformed} malformed, {progress.late} late) "
            f"in {progress.elapsed_s:.1f}s, {progress.events_per_s:.0f} events/s")


class StatusDisplay:
    """On a terminal one status line redrawn in place; otherwise a plain line every 5 s."""

    def __init__(self, out: TextIO, *, tty: bool, rate: int, total_events: int, duration_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.out = out
        self.tty = tty
        self.rate = rate
        self.total_events = total_events
        self.duration_s = duration_s
        self.clock = clock
        self.every_s = REDRAW_EVERY_S if tty else REPORT_EVERY_S
        self.next_s = clock() + self.every_s
        self.drawn = False

    def update(self, progress: Progress) -> None:
        now = self.clock()
        if now < self.next_s:
            return
        self.next_s = now + self.every_s
        if self.tty:
            line = status_line(progress, rate=self.rate, total_events=self.total_events, duration_s=self.duration_s)
            width = shutil.get_terminal_size().columns - 1  # a wrapped line could not be redrawn
            self.out.write(f"\r{line[:width]}\x1b[K")
            self.drawn = True
        else:
            self.out.write(report_line(progress) + "\n")
        self.out.flush()

    def finish(self, progress: Progress) -> None:
        if self.drawn:
            self.out.write("\r\x1b[K")
        self.out.write(summary_line(progress) + "\n")
        self.out.flush()


# -- delivery -----------------------------------------------------------------------------


class DeliveryError(RuntimeError):
    """The broker did not take some records: the command fails rather than report them produced."""


class Deliveries:
    """Counts records the broker refused, from their delivery futures."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: BaseException | None = None

    def observe(self, future: asyncio.Future[Any]) -> None:
        error = asyncio.CancelledError() if future.cancelled() else future.exception()
        if error is not None:
            self.failed += 1
            self.first_error = self.first_error or error


def _sender(producer: Producer, topic: str, deliveries: Deliveries) -> Send:
    """Buffers each record in the producer; its delivery is counted when the broker answers."""

    async def send(key: bytes, value: bytes) -> None:
        future = await producer.send(topic, value, key=key)
        future.add_done_callback(deliveries.observe)

    return send


# -- the command --------------------------------------------------------------------------


class produce(AppCommand):  # noqa: N801 - the class name is the subcommand name
    """Produce demo events (user_id, event_type, timestamp, value) to the events topic; with AGGREGATIONS,
    events of the spec (--users distinct keys per aggregation)."""

    options = [
        option("--rate", type=click.IntRange(min=0), default=2000, show_default=True,
               help="Events per second; 0 sends as fast as the broker takes them (preloading)."),
        option("--count", type=click.IntRange(min=0), default=0, show_default=True,
               help="Stop after this many events (0: no limit)."),
        option("--duration", type=click.FloatRange(min=0), default=0.0, show_default=True,
               help="Stop after this many seconds (0: no limit); with --rate, after rate x duration events."),
        option("--users", type=click.IntRange(min=1), default=1000, show_default=True,
               help="Distinct user ids (with AGGREGATIONS: distinct keys per aggregation)."),
        option("--types", default=DEFAULT_TYPES, show_default=True, callback=_check_types,
               help="Event types with relative weights, name[:weight] separated by commas (not with AGGREGATIONS)."),
        option("--malformed", type=_FractionType(), default="0", show_default=True, callback=_check_anomaly_sum,
               help="Fraction in [0,1] of records the worker must dead-letter, floor(n x F) of the first n, cycling "
                    "through truncated JSON, a missing field, a wrong type, NaN and 1e999 values (invalid JSON to "
                    "the parser), an unparseable timestamp and epoch seconds given as milliseconds (with "
                    "AGGREGATIONS: cut JSON and a missing time in turn)."),
        option("--late", type=_FractionType(), default="0", show_default=True, callback=_check_anomaly_sum,
               help="Fraction in [0,1] of valid events stamped ALLOWED_LATENESS + the longest window + 60 s before "
                    "now (3 min with the default settings): a worker that keeps up has closed their windows and "
                    "sends them to the late topic. --malformed plus --late is at most 1."),
        option("--seed", type=int, default=0, show_default=True, help="Random seed (same seed, same events)."),
    ]

    async def run(self, rate: int, count: int, duration: float, users: int, types: str, malformed: Fraction,
                  late: Fraction, seed: int) -> None:
        settings = self.app.settings  # type: ignore[attr-defined]
        offset_ms = late_offset_ms(settings.pipeline.allowed_lateness_ms, settings.pipeline.windows)
        spec = settings.pipeline.spec
        generator: RecordSource
        if spec is None:
            generator = EventGenerator(seed=seed, users=users, types=types, malformed=malformed, late=late,
                                       late_offset_ms=offset_ms)
        elif types != DEFAULT_TYPES:
            raise click.UsageError("--types makes the article's events; with AGGREGATIONS set, --users is the "
                                   "number of keys per aggregation")
        else:  # AGGREGATIONS: the spec's events, --users keys per aggregation (commands/loadgen.py)
            generator = SpecEventGenerator(spec, keys=users, seed=seed, malformed=malformed, late=late,
                                           late_offset_ms=offset_ms)
        try:
            await check_access(settings.kafka, wait_s=settings.startup_timeout_ms / 1000)
        except BrokerAccessError as exc:
            exit_with_line(f"error: {exc}", 2)
        # The worker's layout and check: a missing topic gets TOPIC_PARTITIONS, a mismatch is refused.
        try:
            await ensure_topics(client_options(settings.kafka), [TopicSpec(settings.kafka.topic_events,
                                                                           settings.kafka.topic_partitions)],
                                settings.kafka.topic_replication)
        except TopicLayoutError as exc:
            raise click.UsageError(str(exc)) from None
        producer = Producer(settings.kafka, max_value_bytes=settings.pipeline.max_event_bytes,
                            acks=settings.kafka.produce_acks)
        try:
            await producer.start()
        except BrokerAccessError as exc:
            exit_with_line(f"error: {exc}", 2)
        topic_name = settings.kafka.topic_events
        deliveries = Deliveries()
        display = StatusDisplay(self.stdout, tty=self.stdout.isatty(), rate=rate,
                                total_events=event_limit(rate, count, duration),
                                duration_s=duration)
        target = f"{rate} events/s" if rate else "as fast as possible"
        late_note = f", late events {offset_ms / 1000:g}s old" if late else ""
        self.say(f"producing to {topic_name!r}, {target}{late_note}")
        started = time.monotonic()
        try:
            await produce_events(_sender(producer, topic_name, deliveries), generator, rate=rate, count=count,
                                 duration_s=duration, on_progress=display.update)
            await producer.flush()
            await asyncio.sleep(0)  # let the delivery callbacks of the last batches run
        finally:
            display.finish(Progress.of(generator, time.monotonic() - started))
            await producer.stop()
        if deliveries.failed:
            raise DeliveryError(f"the broker did not take {deliveries.failed} events: {deliveries.first_error!r}")
