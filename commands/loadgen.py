"""Deterministic demo load: weighted event types, exact shares of malformed and late records.

Shared by `faust -A app produce` (commands/produce.py) and `make bench` (bench/__main__.py):
`EventGenerator` decides what each record of the article's job is, `SpecEventGenerator` what each
record of an aggregation spec is (with a chosen number of keys), `produce_events` paces the records
into a send function. Nothing here knows faust or Kafka, so tests drive it with plain data.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from itertools import accumulate
from typing import Any, Final, NamedTuple, Protocol

import orjson

from aggregations.spec import KeyValue, Spec
from formats.events import (
    BAD_TIMESTAMP,
    INVALID_JSON,
    MAX_STRING_CHARS,
    MISSING_FIELD,
    TIMESTAMP_OUT_OF_RANGE,
    WRONG_TYPE,
    Event,
    encode_event,
    iso_utc,
)
from tables.windows import WindowSpec

DEFAULT_TYPES: Final = "click:6,view:3,purchase:1"

VALID: Final = "valid"
MALFORMED: Final = "malformed"
LATE: Final = "late"

# Beyond the worker's lateness and the longest window, a late event is stamped this much
# further back: it covers the worker's consumption lag and its 1 s frontier ticks.
LATE_MARGIN_MS: Final = 60_000

# Pacing: at a set rate the loop wakes every TICK_S and sends what is due; at --rate 0 it
# yields to the event loop every BURST records so the producer's sender task and the
# progress display get to run.
TICK_S: Final = 0.05
BURST: Final = 1_000


# -- options ------------------------------------------------------------------------------


def parse_type_weights(text: str) -> dict[str, float]:
    """`click:6,view:3` -> {'click': 6.0, 'view': 3.0}; a bare name weighs 1."""
    weights: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, weight = item.partition(":")
        name = name.strip()
        try:
            value = float(weight) if weight.strip() else 1.0
        except ValueError:
            value = math.nan
        if not name or not (value > 0 and math.isfinite(value)):
            raise ValueError(f"bad event type {item!r}: expected name[:positive weight], e.g. click:6")
        if len(name) > MAX_STRING_CHARS or not name.isprintable():
            # The validator would dead-letter every event of this type.
            raise ValueError(f"bad event type {item!r}: a name is 1 to {MAX_STRING_CHARS} printable characters")
        if name in weights:
            raise ValueError(f"bad event type {item!r}: {name!r} is listed twice")
        weights[name] = value
    if not weights:
        raise ValueError("expected at least one event type, e.g. click:6,view:3")
    return weights


def parse_fraction(text: str) -> Fraction:
    """'0.001' -> Fraction(1, 1000): exact, so counts derived from it are exact too."""
    try:
        fraction = Fraction(text.strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0 <= fraction <= 1:
        raise ValueError(f"expected a number from 0 to 1, got {text!r}")
    return fraction


def late_offset_ms(allowed_lateness_ms: int, windows: Sequence[WindowSpec], margin_ms: int = LATE_MARGIN_MS) -> int:
    """How far behind the stream's current event time a late event is stamped.

    A worker that keeps up closes the windows that end at or before its highest event
    time minus the allowed lateness. A window containing t ends by t + its size, so an
    event at now - lateness - the longest size - margin finds every one of its windows
    closed.
    """
    return allowed_lateness_ms + max(spec.size_ms for spec in windows) + margin_ms


# -- which record is what -----------------------------------------------------------------


class AnomalySchedule:
    """Record by record, which are malformed and which are late: exact, not a coin flip.

    Error diffusion over exact fractions: after n records exactly floor(n * malformed) are
    malformed, and n * late rounded half up are late. Rounding puts the late records half
    a period away from the malformed ones, so equal fractions never collide; when a late
    record does fall on a malformed record's position it moves to the next record, and
    the late count is one less until then (never further behind: malformed + late <= 1).
    """

    __slots__ = ("_malformed", "_late", "records", "malformed", "late")

    def __init__(self, malformed: Fraction = Fraction(0), late: Fraction = Fraction(0)) -> None:
        for name, fraction in (("malformed", malformed), ("late", late)):
            if not 0 <= fraction <= 1:
                raise ValueError(f"{name} must be a fraction from 0 to 1, got {fraction}")
        if malformed + late > 1:
            raise ValueError(f"malformed + late must be at most 1, got {malformed} + {late}")
        self._malformed = (malformed.numerator, malformed.denominator)
        self._late = (late.numerator, late.denominator)
        self.records = 0
        self.malformed = 0
        self.late = 0

    def next_kind(self) -> str:
        """VALID, MALFORMED or LATE for the next record."""
        n = self.records = self.records + 1
        numerator, denominator = self._malformed
        if n * numerator // denominator > self.malformed:
            self.malformed += 1
            return MALFORMED
        numerator, denominator = self._late
        if (2 * n * numerator + denominator) // (2 * denominator) > self.late:
            self.late += 1
            return LATE
        return VALID


# -- malformed records --------------------------------------------------------------------


def _fields(event: Event) -> dict[str, object]:
    return {"event_type": event.event_type, "timestamp": event.event_ms, "user_id": event.user_id,
            "value": event.value}


def _dumps(fields: dict[str, object]) -> bytes:
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)


def _with_raw_value(event: Event, text: bytes) -> bytes:
    """The event with a value no JSON encoder of ours would write (NaN, 1e999)."""
    fields = _fields(event)
    del fields["value"]
    return _dumps(fields)[:-1] + b',"value":' + text + b"}"


def _truncated(event: Event) -> bytes:
    return encode_event(event)[:-1]  # a producer that died mid-write


def _not_a_number(event: Event) -> bytes:
    return _with_raw_value(event, b"NaN")  # what Python's json.dumps writes for nan


def _overflowing(event: Event) -> bytes:
    return _with_raw_value(event, b"1e999")


def _missing_value(event: Event) -> bytes:
    fields = _fields(event)
    del fields["value"]
    return _dumps(fields)


def _value_as_string(event: Event) -> bytes:
    return _dumps({**_fields(event), "value": repr(event.value)})


def _unparseable_timestamp(event: Event) -> bytes:
    moment = datetime.fromtimestamp(event.event_ms / 1000, tz=timezone.utc)
    return _dumps({**_fields(event), "timestamp": moment.strftime("%m/%d/%Y %H:%M:%S")})  # US style, not ISO


def _seconds_timestamp(event: Event) -> bytes:
    # Epoch seconds where milliseconds are expected: January 1970, before the accepted range.
    return _dumps({**_fields(event), "timestamp": event.event_ms // 1000})


class MalformedKind(NamedTuple):
    name: str
    reason: str  # the rejection events.decode_event gives it
    corrupt: Callable[[Event], bytes]


# The k-th malformed record is of kind k mod len. orjson refuses NaN and numbers beyond a
# double while parsing, so non-finite values reach the dead-letter topic as invalid_json.
MALFORMED_KINDS: Final = (
    MalformedKind("truncated_json", INVALID_JSON, _truncated),
    MalformedKind("missing_field", MISSING_FIELD, _missing_value),
    MalformedKind("wrong_type", WRONG_TYPE, _value_as_string),
    MalformedKind("non_finite_nan", INVALID_JSON, _not_a_number),
    MalformedKind("unparseable_timestamp", BAD_TIMESTAMP, _unparseable_timestamp),
    MalformedKind("non_finite_overflow", INVALID_JSON, _overflowing),
    MalformedKind("absurd_timestamp", TIMESTAMP_OUT_OF_RANGE, _seconds_timestamp),
)


# -- the generator ------------------------------------------------------------------------


class GeneratedRecord(NamedTuple):
    key: bytes  # the user_id, as the pipeline expects
    value: bytes
    kind: str  # VALID, MALFORMED or LATE
    reason: str | None  # for a malformed record, the rejection decode_event gives it


class EventGenerator:
    """Reproducible: the same seed, options and event times give the same records.

    Every record draws the same random numbers whatever its kind, so the fractions change
    which records are malformed or late, never the users, types and values of the others.
    """

    def __init__(self, *, seed: int = 0, users: int = 1000, types: str = DEFAULT_TYPES,
                 malformed: Fraction = Fraction(0), late: Fraction = Fraction(0), late_offset_ms: int = 0) -> None:
        if users < 1:
            raise ValueError("users must be at least 1")
        if late and late_offset_ms <= 0:
            raise ValueError("late events need a positive late_offset_ms")
        weights = parse_type_weights(types)
        self.users = users
        self.late_offset_ms = late_offset_ms
        self.schedule = AnomalySchedule(malformed, late)
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

    def record(self, event_ms: int) -> GeneratedRecord:
        """The next record at the stream's current event time `event_ms`."""
        kind = self.schedule.next_kind()
        if kind == LATE:
            event = self.event(event_ms - self.late_offset_ms)
            return GeneratedRecord(event.user_id.encode(), encode_event(event), LATE, None)
        event = self.event(event_ms)
        if kind == MALFORMED:
            malformed = MALFORMED_KINDS[(self.schedule.malformed - 1) % len(MALFORMED_KINDS)]
            return GeneratedRecord(event.user_id.encode(), malformed.corrupt(event), MALFORMED, malformed.reason)
        return GeneratedRecord(event.user_id.encode(), encode_event(event), VALID, None)


# -- a spec's events ----------------------------------------------------------------------


class Counted(NamedTuple):
    """What the generator meant one aggregation to take of a valid record: its key and measures."""

    aggregation: str
    key: tuple[KeyValue, ...]
    measures: tuple[float, ...]


class SpecRecord(NamedTuple):
    key: bytes
    value: bytes
    kind: str  # VALID, MALFORMED or LATE
    reason: str | None
    event_ms: int  # the event time the record carries (a malformed one's intended time)
    counted: tuple[Counted, ...]  # empty for a malformed record


def _set_path(document: dict[str, Any], names: Sequence[str], value: object) -> None:
    for name in names[:-1]:
        document = document.setdefault(name, {})
    document[names[-1]] = value


def _time_value(event_ms: int, time_format: str) -> object:
    if time_format == "iso8601":
        return iso_utc(event_ms)
    if time_format == "epoch_s":
        return event_ms / 1000  # the shortest repr of ms / 1000 has at most 3 decimals: the same instant
    if time_format == "epoch_us":
        return event_ms * 1000
    return event_ms  # epoch_ms and epoch_ms_or_iso8601


class SpecEventGenerator:
    """Events of an aggregation spec (aggregations/spec.py) with `keys` distinct keys: the n-th record
    takes key number n mod `keys` in every aggregation (a string part "<column>-<number>", an
    integer part the number, a boolean part whether the number is even), so each aggregation whose
    `where` it passes has `keys` keys (fewer for keys of booleans only). `field_keys` gives a key field
    fewer values (its path's text -> N: number mod N), as a site has many devices: key number n is
    then always in the same site. A field that a `where` names
    takes, in every other record, one of the condition's values in turn (then the aggregations that
    group by it get those values as keys too); measures are multiples of 0.25 from 0 to 100, so sums
    are exact in any order. Malformed records alternate between cut JSON and a missing time.

    Reproducible like EventGenerator, and each record says what it meant each aggregation to count
    (`SpecRecord.counted`): a reference for the outputs that does not ask the pipeline's judge.
    """

    def __init__(self, spec: Spec, *, keys: int, field_keys: Mapping[str, int] | None = None, seed: int = 0,
                 malformed: Fraction = Fraction(0), late: Fraction = Fraction(0), late_offset_ms: int = 0) -> None:
        if keys < 1:
            raise ValueError("keys must be at least 1")
        if late and late_offset_ms <= 0:
            raise ValueError("late events need a positive late_offset_ms")
        self.spec = spec
        self.keys = keys
        self.late_offset_ms = late_offset_ms
        self.schedule = AnomalySchedule(malformed, late)
        self._rng = random.Random(seed)
        self._where: dict[tuple[str, ...], tuple[KeyValue, ...]] = {}
        for aggregation in spec.aggregations:
            for condition in aggregation.where:
                self._where.setdefault(condition.path.names, condition.values)
        key_fields = {part.path.names: part.type for a in spec.aggregations for part in (*a.key, *a.distinct)}
        measure_fields = {path.names for a in spec.aggregations for path in a.measures}
        clash = (set(key_fields) & measure_fields) | ({spec.time.path.names} & (set(key_fields) | measure_fields))
        if clash:
            raise ValueError(f"the spec uses {'.'.join(min(clash))} as two kinds of field: this generator makes "
                             "each field one kind")
        for a in spec.aggregations:
            for part in (*a.key, *a.distinct):
                if key_fields[part.path.names] != part.type:
                    raise ValueError(f"the spec uses {part.path.text} both as {part.type} and as "
                                     f"{key_fields[part.path.names]}: this generator gives a field one type")
        paths = sorted({*key_fields, *measure_fields, *self._where, spec.time.path.names})
        for shorter, longer in zip(paths, paths[1:], strict=False):
            if longer[:len(shorter)] == shorter:
                raise ValueError(f"the spec uses {'.'.join(shorter)} and {'.'.join(longer)}, one inside the "
                                 "other: this generator cannot make both")
        key_paths = {part.path.text: part.path.names for a in spec.aggregations for part in (*a.key, *a.distinct)}
        self._field_keys: dict[tuple[str, ...], int] = {}
        for text, count in (field_keys or {}).items():
            if text not in key_paths:
                raise ValueError(f"{text} is not a key field of the spec: its key fields are "
                                 f"{', '.join(sorted(key_paths))}")
            names = key_paths[text]
            if count < 1:
                raise ValueError(f"{text} needs at least 1 value, not {count}")
            self._field_keys[names] = count
        self._key_fields = key_fields
        self._measure_fields = sorted(measure_fields)
        self._index = 0

    def _key_value(self, names: tuple[str, ...], key_type: str, number: int) -> KeyValue:
        if key_type == "int":
            return number
        if key_type == "bool":
            return number % 2 == 0
        return f"{'_'.join(names)}-{number}"

    def _document(self, number: int, event_ms: int) -> tuple[dict[str, Any], dict[tuple[str, ...], object]]:
        rng = self._rng
        values: dict[tuple[str, ...], object] = {}
        for names, key_type in self._key_fields.items():
            values[names] = self._key_value(names, key_type, number % self._field_keys.get(names, self.keys))
        for names in self._measure_fields:
            values[names] = rng.randrange(0, 400) / 4
        for names, allowed in self._where.items():
            if number % 2 == 0:
                values[names] = allowed[(number // 2) % len(allowed)]
            elif names not in values:
                values[names] = f"{'_'.join(names)}-other"
        document: dict[str, Any] = {}
        _set_path(document, self.spec.time.path.names, _time_value(event_ms, self.spec.time.format))
        for names, value in values.items():
            _set_path(document, names, value)
        return document, values

    def _counted(self, values: dict[tuple[str, ...], object]) -> tuple[Counted, ...]:
        counted = []
        for aggregation in self.spec.aggregations:
            if all(any(type(values[c.path.names]) is type(v) and values[c.path.names] == v for v in c.values)
                   for c in aggregation.where):
                key = tuple(values[part.path.names] for part in aggregation.key)
                measures = tuple(values[path.names] for path in aggregation.measures)
                counted.append(Counted(aggregation.name, key, measures))  # type: ignore[arg-type]
        return tuple(counted)

    def record(self, event_ms: int) -> SpecRecord:
        """The next record at the stream's current event time `event_ms`."""
        kind = self.schedule.next_kind()
        number = self._index % self.keys
        self._index += 1
        if kind == LATE:
            event_ms -= self.late_offset_ms
        document, values = self._document(number, event_ms)
        key = str(number).encode()
        if kind == MALFORMED:
            if self.schedule.malformed % 2:
                return SpecRecord(key, orjson.dumps(document)[:-1], MALFORMED, INVALID_JSON, event_ms, ())
            _drop_path(document, self.spec.time.path.names)
            return SpecRecord(key, orjson.dumps(document), MALFORMED, MISSING_FIELD, event_ms, ())
        return SpecRecord(key, orjson.dumps(document), kind, None, event_ms, self._counted(values))


def _drop_path(document: dict[str, Any], names: Sequence[str]) -> None:
    for name in names[:-1]:
        document = document[name]
    del document[names[-1]]


# -- pacing -------------------------------------------------------------------------------


class RecordSource(Protocol):
    """What produce_events draws records from: EventGenerator, SpecEventGenerator, or a wrapper of one."""

    schedule: AnomalySchedule

    def record(self, event_ms: int) -> GeneratedRecord | SpecRecord: ...



@dataclass(frozen=True, slots=True)
class Progress:
    produced: int
    malformed: int
    late: int
    elapsed_s: float

    @property
    def events_per_s(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @classmethod
    def of(cls, generator: RecordSource, elapsed_s: float) -> Progress:
        schedule = generator.schedule
        return cls(schedule.records, schedule.malformed, schedule.late, elapsed_s)


Send = Callable[[bytes, bytes], Awaitable[object]]


def wall_clock_ms(_index: int) -> int:
    """Event time of a live stream: now."""
    return time.time_ns() // 1_000_000


def event_limit(rate: int, count: int, duration_s: float) -> int:
    """Records to produce, 0 meaning no limit: at a set rate a duration is a count too."""
    limits = [count] if count else []
    if rate and duration_s:
        limits.append(math.ceil(rate * duration_s))
    return min(limits, default=0)


async def produce_events(
    send: Send,
    generator: RecordSource,
    *,
    rate: int,
    count: int = 0,
    duration_s: float = 0.0,
    event_ms: Callable[[int], int] = wall_clock_ms,
    on_progress: Callable[[Progress], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Progress:
    """Send records from `generator` at `rate` per second (0: as fast as `send` takes them).

    Stops after `count` records or `duration_s` seconds, whichever comes first (0: no
    limit); at a set rate a duration is a count (rate x duration records), so a sender that
    cannot keep up takes longer. `event_ms(i)` is the event time of the i-th record. `send` is awaited per
    record: it should buffer the record (a producer's send), not wait for its delivery.
    """
    if rate < 0 or count < 0 or duration_s < 0:
        raise ValueError("rate, count and duration_s must not be negative")
    limit = event_limit(rate, count, duration_s)
    started = clock()
    produced = 0
    while not limit or produced < limit:
        elapsed_s = clock() - started
        if not rate and duration_s and elapsed_s >= duration_s:
            break
        # At a set rate the i-th record is due at i / rate: catch up on whatever is due.
        due = int(elapsed_s * rate) + 1 if rate else produced + BURST
        if limit:
            due = min(due, limit)
        for index in range(produced, due):
            record = generator.record(event_ms(index))
            await send(record.key, record.value)
        produced = max(produced, due)
        if on_progress is not None:
            on_progress(Progress.of(generator, clock() - started))
        await sleep(TICK_S if rate else 0)
    return Progress.of(generator, clock() - started)
