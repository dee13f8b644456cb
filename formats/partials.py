"""The partials topic (`{app_id}-window-partials`, stage 1 -> stage 2): window keys, their routing, and
the two messages on it.

A *partials message* carries the cumulative partial aggregates of one input partition for many event
types of one window instance (window, window_start), all of one stage-2 partition, as columns.
Generations, each still read (a rolling upgrade meets them in the topic and in stage 1's changelog):

- 4 (PARTIALS_VERSION, written for several measures): generation 3 with ``"n": M``, the number of
  measures; "c", "sum", "min" and "max" then hold M values per key (key j's measure k at j * M + k),
  "m" one marker per key;
- 3 (written for one measure, the article's job): ``{"v": 3, "p": partition, "w": window, "s": start_ms,
  "t": [key...], "c": [count...], "sum": [...], "min": [...], "max": [...], "m": [marker...]}``;
  before the version field was written the same body came without ``"v"`` (recognised by ``"c"``);
- 2: many keys of any instances, ``{"p": partition, "e": [[window, start_ms, event_type,
  [count, sum, min, max, marker]], ...]}``;
- 1: one key, ``{"p", "w", "s", "t", "a": [count, sum, min, max, marker]}``.

A *frontier message* (FRONTIER_VERSION 1) says that an input partition's frontier reached
``f``: ``{"v": 1, "p": partition, "f": frontier_ms, "n": input partitions, "at": announced at}``
(without ``"v"`` before the version field was written).

Counts and markers are integers (an offset beyond 2**53 must not lose precision), sums, minima and
maxima floats. A message stays under PARTIALS_BYTES, well below Kafka's default 1 MiB record limit.

Stage 1's pack of a window instance's partials (formats/state.py) is the very body it sends: one
encoding per flush. A change of this layout is therefore a change of stage 1's changelog too, and
takes a new version of both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, NamedTuple, Protocol

import numpy as np
import orjson
from aiokafka.partitioner import murmur2

from formats.keys import encode_key_part

__all__ = [
    "FRONTIER_VERSION",
    "PARTIALS_BYTES",
    "PARTIALS_VERSION",
    "FrontierMessage",
    "PartialColumns",
    "PartialKey",
    "PartialsMessage",
    "column_entries",
    "columns_of",
    "decode_stage_message",
    "encode_frontier",
    "encode_partial_columns",
    "partial_columns",
    "key_partition",
    "key_part_columns",
    "key_partitions",
    "key_text",
    "partial_partition",
]

PARTIALS_VERSION: Final = 4
_ONE_MEASURE_VERSION: Final = 3
FRONTIER_VERSION: Final = 1
PARTIALS_BYTES: Final = 256 * 1024


class PartialKey(NamedTuple):
    """A window key: one window instance (window, start) of one event type."""

    window: str
    start_ms: int
    event_type: str


class PartialsMessage(NamedTuple):
    """A message of generation 1 or 2."""

    partition: int  # input partition the partials cover
    entries: list[tuple[PartialKey, list[float]]]  # each key's [count, sum, min, max, marker]

    def as_columns(self) -> list[PartialColumns]:
        """Each entry as a message of generation 3 (of one key)."""
        return [PartialColumns(self.partition, key.window, key.start_ms, [key.event_type],
                               *([value] for value in partial)) for key, partial in self.entries]


class PartialColumns(NamedTuple):
    """A message of generation 3: one window instance's partials of one input partition, column by
    column (entry j: types[j], counts[j], ...)."""

    partition: int  # input partition the partials cover
    window: str
    start_ms: int
    types: list[str]
    counts: list[int]
    sums: list[float]
    lows: list[float]
    highs: list[float]
    markers: list[int]
    measures: int = 1  # M: counts, sums, lows and highs hold M values per key

    @property
    def columns(self) -> tuple[list[str], list[int], list[float], list[float], list[float], list[int]]:
        """The event types and the five columns of partials, in that order."""
        return self.types, self.counts, self.sums, self.lows, self.highs, self.markers

    @property
    def entries(self) -> list[tuple[PartialKey, list[float]]]:
        """Each key's partial ([count, sum, min, max] per measure, then the marker), as PartialsMessage has
        them."""
        window, start_ms, measures = self.window, self.start_ms, self.measures
        found = []
        for j, (key, marker) in enumerate(zip(self.types, self.markers, strict=True)):
            partial: list[float] = []
            for k in range(j * measures, j * measures + measures):
                partial += [self.counts[k], self.sums[k], self.lows[k], self.highs[k]]
            found.append((PartialKey(window, start_ms, key), [*partial, marker]))
        return found


class FrontierMessage(NamedTuple):
    partition: int
    frontier_ms: int
    source_partitions: int
    announced_at_ms: int  # wall clock of the announcement: the start of the export delay


class Columns(Protocol):
    """Five columns of partials by slot (count and marker integers; M values per slot in the first four
    with M measures): stage 1's open partials of a window instance (tables.partials.InstancePartials),
    or one input partition's in stage 2 (tables.totals.SourceColumns)."""

    @property
    def measures(self) -> int: ...
    @property
    def count(self) -> Sequence[int]: ...
    @property
    def total(self) -> Sequence[float]: ...
    @property
    def low(self) -> Sequence[float]: ...
    @property
    def high(self) -> Sequence[float]: ...
    @property
    def marker(self) -> Sequence[int]: ...


class Instance(Protocol):
    """One window instance's state, a slot per event type."""

    @property
    def window(self) -> str: ...
    @property
    def start_ms(self) -> int: ...
    @property
    def types(self) -> Sequence[str]: ...


class InstanceColumns(Instance, Columns, Protocol):
    """The partials of one window instance (tables.partials.InstancePartials)."""


def key_text(parts: Sequence[str | int | bool | None]) -> str:
    """A spec's key (its parts) as the text its slots and messages carry: canonical JSON, so that equal
    keys are equal texts and parts of different types never meet ("1" is not 1)."""
    return orjson.dumps(list(parts)).decode()


def key_part_columns(texts: Sequence[str], parts: int) -> list[list[str | int | bool | None]]:
    """The inverse of key_text for many keys of `parts` parts each, as one column per part, parsed in one
    call."""
    keys = orjson.loads("[" + ",".join(texts) + "]")
    return [[key[i] for key in keys] for i in range(parts)]


def key_partition(aggregation: str, text: str, partitions: int) -> int:
    """The partials-topic partition of every window of one key of a spec's aggregation: murmur2 of the
    aggregation and the key text, so that stage 2's parallelism grows with the keys."""
    return (murmur2(_routed_bytes(aggregation, text)) & 0x7FFFFFFF) % partitions


def _routed_bytes(aggregation: str, text: str) -> bytes:
    """What key_partition hashes: the aggregation and the key text, apart."""
    return f"{aggregation}\x00{text}".encode()


def key_partitions(aggregation: str, texts: Sequence[str], partitions: int) -> list[int]:
    """key_partition of each of these keys, with one pass of column arithmetic over all of them: stage 1
    routes every changed key at every flush, and aiokafka's murmur2, a Python loop per 4 bytes, took a
    third of the stages' time at 20,000 keys (NOTES.md, Performance)."""
    hashes = murmur2_many([_routed_bytes(aggregation, text) for text in texts])
    return ((hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).tolist()


_M: Final = np.uint32(0x5BD1E995)


def murmur2_many(datas: Sequence[bytes]) -> np.ndarray:
    """aiokafka's murmur2 (Kafka's default partitioner's hash) of each of `datas`, as uint32 columns.

    Each input is a zero-padded row of 32-bit little-endian words with one spare word, so that its last
    1-3 bytes are one more word (XOR with the padding's zeros changes nothing); a row's hash stops
    taking words at its own length (np.where)."""
    n = len(datas)
    lengths = np.fromiter(map(len, datas), dtype=np.int64, count=n)
    if n == 0:
        return np.zeros(0, dtype=np.uint32)
    words_per_row = int(lengths.max()) // 4 + 1
    width = words_per_row * 4
    words = np.frombuffer(b"".join([data.ljust(width, b"\0") for data in datas]), dtype="<u4").reshape(n, -1)
    whole = lengths // 4
    h = np.uint32(0x9747B28C) ^ lengths.astype(np.uint32)
    for i in range(int(whole.max())):
        k = words[:, i] * _M
        k ^= k >> np.uint32(24)
        k *= _M
        h = np.where(whole > i, (h * _M) ^ k, h)
    tail = words[np.arange(n), whole]  # the last 1-3 bytes, zero-padded (0 when there are none)
    h = np.where(lengths % 4 != 0, (h ^ tail) * _M, h)
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def partial_partition(event_type: str, partitions: int) -> int:
    """The partials-topic partition of every window key of `event_type`: Kafka's default partitioner
    (murmur2) of the encoded event type, so any client computes the same, and the web router finds a
    key's stage-2 owner with it.

    By event type alone, not by the whole window key: one stage-2 partition then exports every window
    of a type, in start order, which is what per-type alert rules (trailing windows, `for` counts,
    absence) need as their single home. Changing it changes the topic's layout (CHANGELOG.md).
    """
    return (murmur2(encode_key_part(event_type).encode()) & 0x7FFFFFFF) % partitions


def encode_partial_columns(partition: int, instance: InstanceColumns, slots: Sequence[int]) -> bytes:
    """The partials of these slots of one window instance, as a message of generation 3 (stage 1 sends
    it as it is, cut at PARTIALS_BYTES by its caller, and stores the same bytes as its pack)."""
    types = instance.types
    if instance.measures == 1:
        return orjson.dumps({"v": _ONE_MEASURE_VERSION, "p": partition, "w": instance.window, "s": instance.start_ms,
                             "t": [types[i] for i in slots], **partial_columns(instance, slots)},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"v": PARTIALS_VERSION, "p": partition, "w": instance.window, "s": instance.start_ms,
                         "n": instance.measures, "t": [types[i] for i in slots], **partial_columns(instance, slots)},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def partial_columns(columns: Columns, slots: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
    """The five columns of partials, as both stages' bodies hold them: count, sum, min, max (M values per
    slot with M measures), marker; numpy arrays for orjson's OPT_SERIALIZE_NUMPY, which writes the bytes
    the same values as Python numbers give, without a Python object per value."""
    measures = columns.measures
    chosen = np.asarray(slots, dtype=np.intp)
    values = chosen if measures == 1 else (chosen[:, None] * measures + np.arange(measures)).ravel()
    return {"c": np.asarray(columns.count, dtype=np.int64)[values],
            "sum": np.asarray(columns.total, dtype=np.float64)[values],
            "min": np.asarray(columns.low, dtype=np.float64)[values],
            "max": np.asarray(columns.high, dtype=np.float64)[values],
            "m": np.asarray(columns.marker, dtype=np.int64)[chosen]}


def columns_of(body: dict[str, Any]) -> tuple[list[Any], ...]:
    """The five columns of a body written with partial_columns."""
    return body["c"], body["sum"], body["min"], body["max"], body["m"]


def column_entries(body: dict[str, Any]) -> zip:  # type: ignore[type-arg]
    """(event_type, count, sum, min, max, marker) of a body of generation 3."""
    return zip(body["t"], *columns_of(body), strict=True)


def encode_frontier(message: FrontierMessage) -> bytes:
    return orjson.dumps({"v": FRONTIER_VERSION, "p": message.partition, "f": message.frontier_ms,
                         "n": message.source_partitions, "at": message.announced_at_ms})


def _partial(count: Any, total: Any, low: Any, high: Any, marker: Any) -> list[float]:
    return [int(count), float(total), float(low), float(high), int(marker)]


def decode_stage_message(raw: bytes) -> PartialColumns | PartialsMessage | FrontierMessage:
    """A message of any generation; ValueError for one this version does not know."""
    body = orjson.loads(raw)
    if "f" in body:
        if body.get("v", FRONTIER_VERSION) != FRONTIER_VERSION:
            raise ValueError(f"a frontier message of unknown version {body['v']!r}: {raw[:200]!r}")
        return FrontierMessage(int(body["p"]), int(body["f"]), int(body["n"]), int(body["at"]))
    if "c" in body:  # the hot path of stage 2, taken as orjson decodes encode_partial_columns' output
        version = body.get("v", _ONE_MEASURE_VERSION)
        measures = 1 if version == _ONE_MEASURE_VERSION else body["n"] if version == PARTIALS_VERSION else 0
        if type(measures) is not int or measures < 1:
            raise ValueError(f"a partials message of unknown version {version!r}: {raw[:200]!r}")
        types, counts, sums, lows, highs, markers = body["t"], *columns_of(body)
        if not (len(types) == len(markers)
                and len(counts) == len(sums) == len(lows) == len(highs) == len(types) * measures):
            raise ValueError(f"a partials message with columns of unequal lengths: {raw[:200]!r}")
        return PartialColumns(body["p"], body["w"], body["s"], types, counts, sums, lows, highs, markers, measures)
    if "e" not in body:  # generation 1: one key
        key = PartialKey(str(body["w"]), int(body["s"]), str(body["t"]))
        return PartialsMessage(int(body["p"]), [(key, _partial(*body["a"]))])
    # Generation 2, taken as orjson decodes it: the start, count and marker as integers, the sum, min and
    # max as floats (as its writer wrote them).
    return PartialsMessage(body["p"], [(_new_key(PartialKey, (window, start, event_type)), partial)
                                       for window, start, event_type, partial in body["e"]])


_new_key = tuple.__new__  # a NamedTuple without its constructor's argument handling
