"""Every message shape the pipeline writes to Kafka, with its one serialization path.

- `window-partials` (internal, stage 1 -> stage 2): the cumulative partial aggregates of one
  input partition for many event types of one window instance (window, window_start), all of one
  stage-2 partition, as columns (encode_partial_columns: one message per flush, instance and
  target, cut at PARTIALS_BYTES), or a frontier marker. Stage 2 also reads the earlier versions'
  messages of one key and of many keys (encode_partials).
- `events-dlq`: the original record bytes, untouched, with the reason and the source
  position in headers (the Kafka Connect convention, so existing tooling can read them).
- `events-late`: the original record bytes with the source position and the windows it
  missed in headers.
- `events-alerts`: one alert fired or resolved by a rule (JSON, `encode_alert`), in the
  partition of the stage-2 partition that judged it, with its sequence number there in a header.

- `{app_id}-watermarks` (internal): each input partition's watermark, published by its owner.
- The stage changelogs `{app_id}-ingest-state` and `{app_id}-export-state`: the keys and
  values of each stage's per-partition state (tables/store.py), including the position
  record that says where the partition's input resumes; the window keys (stage 1's partials,
  stage 2's totals) are stored many to a record, in packs (tables/packed.py).

Keys are built here too, so stage 1, stage 2 and the web views agree, and the partition a
window key's partial goes to is picked by one function (by its event type).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from aiokafka.partitioner import murmur2

from alerts.engine import Alert, Track
from chunks import encode_in_runs
from events import Rejection, iso_utc
from keys import decode_key_part, encode_key_part
from tables.packed import PackBooks, packs_in
from tables.partials import InstancePartials, PartialKey, PartitionPartials
from tables.totals import ABSENT, InstanceTotals, SourceColumns
from tables.watermark import Mark

HEADER_REASON = "dlq.reason"
HEADER_DETAIL = "dlq.detail"
HEADER_TOPIC = "source.topic"
HEADER_PARTITION = "source.partition"
HEADER_OFFSET = "source.offset"
HEADER_MISSED = "late.windows"
HEADER_ALERT_SEQ = "alert.seq"  # an alert's position among its stage-2 partition's alerts
HEADER_ORIGINAL_BYTES = "dlq.original.bytes"  # only on a dead letter whose value was cut
SOURCE_HEADER_PREFIX = "source.header."  # the source record's own headers, renamed

Headers = list[tuple[str, bytes]]


class PartialsMessage(NamedTuple):
    partition: int  # input partition the partials cover
    entries: list[tuple[PartialKey, list[float]]]  # each key's [count, sum, min, max, marker]


class PartialColumns(NamedTuple):
    """A partials message as stage 1 writes it (encode_partial_columns): one window instance's
    partials of one input partition, column by column (entry j: types[j], counts[j], ...)."""

    partition: int  # input partition the partials cover
    window: str
    start_ms: int
    types: list[str]
    counts: list[int]
    sums: list[float]
    lows: list[float]
    highs: list[float]
    markers: list[int]

    @property
    def entries(self) -> list[tuple[PartialKey, list[float]]]:
        """Each key's [count, sum, min, max, marker], as PartialsMessage has them."""
        window, start_ms = self.window, self.start_ms
        return [(PartialKey(window, start_ms, event_type), [count, total, low, high, marker])
                for event_type, count, total, low, high, marker in
                zip(self.types, self.counts, self.sums, self.lows, self.highs, self.markers, strict=True)]


class FrontierMessage(NamedTuple):
    partition: int
    frontier_ms: int
    source_partitions: int
    announced_at_ms: int  # wall clock of the announcement: the start of the export delay


def window_key(key: PartialKey) -> str:
    """`window|start_ms|encoded event_type`: the stage-2 table key and Kafka message key."""
    return f"{key.window}|{key.start_ms}|{encode_key_part(key.event_type)}"


def parse_window_key(text: str) -> PartialKey:
    window, start_ms, event_type = text.split("|")
    return PartialKey(window, int(start_ms), decode_key_part(event_type))


def partial_partition(event_type: str, partitions: int) -> int:
    """The partials-topic partition of every window key of `event_type`: Kafka's default partitioner
    (murmur2) of the encoded event type, so any client computes the same, and the web router finds a
    key's stage-2 owner with it.

    By event type alone, not by the whole window key: one stage-2 partition then exports every window
    of a type, in start order, which is what per-type alert rules (trailing windows, `for` counts,
    absence) need as their single home. Changing it changes the topic's layout (README, "Upgrading").
    """
    return (murmur2(encode_key_part(event_type).encode()) & 0x7FFFFFFF) % partitions


# A partials message stays well below Kafka's default 1 MiB record limit.
PARTIALS_BYTES = 256 * 1024


def encode_partials(partition: int, entries: Iterable[tuple[PartialKey, list[float]]]) -> list[bytes]:
    """The bodies of the partials messages carrying `entries` of input partition `partition` in the
    per-key layout, which stage 2 still reads: as few as PARTIALS_BYTES allows (tests and tools)."""
    rows = [[key.window, key.start_ms, key.event_type, partial] for key, partial in entries]
    if not rows:
        return []
    return [body for _, _, body in encode_in_runs(rows, lambda run: orjson.dumps({"p": partition, "e": run}),
                                                  PARTIALS_BYTES)]


def encode_partial_columns(partition: int, instance: InstancePartials, slots: Sequence[int]) -> bytes:
    """The partials of these slots of one window instance, as columns: a partials message body (stage 1
    sends it as it is, cut at PARTIALS_BYTES by its caller), and the same bytes are stage 1's pack of
    those slots. Count and marker are integers, the sum, min and max floats."""
    types = instance.types
    return orjson.dumps({"p": partition, "w": instance.window, "s": instance.start_ms, "t": [types[i] for i in slots],
                         **_partial_columns(instance, slots)})


def _partial_columns(columns: InstancePartials | SourceColumns, slots: Sequence[int]) -> dict[str, list[Any]]:
    """The five columns of partials, as both stages' bodies hold them: count, sum, min, max, marker."""
    count, total, low, high, marker = columns.count, columns.total, columns.low, columns.high, columns.marker
    return {"c": [count[i] for i in slots], "sum": [total[i] for i in slots], "min": [low[i] for i in slots],
            "max": [high[i] for i in slots], "m": [marker[i] for i in slots]}


def _columns_of(body: dict[str, Any]) -> tuple[list[Any], ...]:
    """The five columns of a body written with _partial_columns."""
    return body["c"], body["sum"], body["min"], body["max"], body["m"]


def _column_entries(body: dict[str, Any]) -> zip:  # type: ignore[type-arg]
    """(event_type, count, sum, min, max, marker) of a column body (encode_partial_columns)."""
    return zip(body["t"], *_columns_of(body), strict=True)


def encode_frontier(message: FrontierMessage) -> bytes:
    return orjson.dumps({"p": message.partition, "f": message.frontier_ms, "n": message.source_partitions,
                         "at": message.announced_at_ms})


def _partial(count: Any, total: Any, low: Any, high: Any, marker: Any) -> list[float]:
    # Count and marker stay integers: an offset beyond 2**53 must not lose precision.
    return [int(count), float(total), float(low), float(high), int(marker)]


def decode_stage_message(raw: bytes) -> PartialColumns | PartialsMessage | FrontierMessage:
    body = orjson.loads(raw)
    if "f" in body:
        return FrontierMessage(int(body["p"]), int(body["f"]), int(body["n"]), int(body["at"]))
    if "c" in body:  # the hot path of stage 2, taken as orjson decodes encode_partial_columns' output
        columns = body["t"], *_columns_of(body)
        if len(set(map(len, columns))) != 1:
            raise ValueError(f"a partials message with columns of unequal lengths: {raw[:200]!r}")
        return PartialColumns(body["p"], body["w"], body["s"], *columns)
    if "e" not in body:  # an earlier version's message: one key
        key = PartialKey(str(body["w"]), int(body["s"]), str(body["t"]))
        return PartialsMessage(int(body["p"]), [(key, _partial(*body["a"]))])
    # An earlier version's message of many keys, taken as orjson decodes encode_partials' output, which
    # writes the start, count and marker as integers and the sum, min and max as floats.
    return PartialsMessage(body["p"], [(_new_key(PartialKey, (window, start, event_type)), partial)
                                       for window, start, event_type, partial in body["e"]])


_new_key = tuple.__new__  # a NamedTuple without its constructor's argument handling


def _source_headers(topic: str, partition: int, offset: int) -> Headers:
    return [(HEADER_TOPIC, topic.encode()), (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode())]


# Dead letters and late records carry the original bytes up to this size, which Kafka's
# default broker limit (message.max.bytes, 1 MiB) accepts with their headers; a longer
# record is cut to it, and a broker that refuses even that gets the first FALLBACK bytes.
MAX_FORWARDED_BYTES = 900 * 1024
FALLBACK_FORWARDED_BYTES = 1024


def dead_letter_headers(topic: str, partition: int, offset: int, rejection: Rejection) -> Headers:
    return [(HEADER_REASON, rejection.reason.encode()), (HEADER_DETAIL, rejection.detail.encode()),
            *_source_headers(topic, partition, offset)]


def forwarded(raw: bytes, headers: Headers, max_bytes: int) -> tuple[bytes, Headers]:
    """The value and headers to forward an original record with: cut to max_bytes, saying its true size."""
    if len(raw) <= max_bytes:
        return raw, headers
    return raw[:max_bytes], [*headers, (HEADER_ORIGINAL_BYTES, str(len(raw)).encode())]


def late_headers(topic: str, partition: int, offset: int, missed: tuple[tuple[str, int], ...]) -> Headers:
    windows = ",".join(f"{name}@{start_ms}" for name, start_ms in missed)
    return [*_source_headers(topic, partition, offset), (HEADER_MISSED, windows.encode())]


def source_offset(headers: Headers) -> int | None:
    """The input offset a DLQ or late record came from, or None if absent."""
    for name, value in headers:
        if name == HEADER_OFFSET:
            return int(value)
    return None


# -- the alerts topic (and the alerts in Redis and the web API: the same JSON) -------------------


def alert_to_api(alert: Alert) -> dict[str, object]:
    return {"id": alert.id, "rule": alert.rule, "kind": alert.kind, "severity": alert.severity,
            "state": alert.state, "event_type": alert.event_type, "window": alert.window,
            "window_start_ms": alert.window_start_ms, "window_end_ms": alert.window_end_ms,
            "window_start": iso_utc(alert.window_start_ms), "window_end": iso_utc(alert.window_end_ms),
            "value": alert.value, "threshold": alert.threshold, "labels": dict(alert.labels)}


def encode_alert(alert: Alert) -> bytes:
    """Canonical JSON (sorted keys): the same alert always gives the same bytes, so a Redis member
    written again by a replay is the same member."""
    return orjson.dumps(alert_to_api(alert), option=orjson.OPT_SORT_KEYS)


def decode_alert(raw: bytes) -> Alert:
    body = orjson.loads(raw)
    return Alert(str(body["id"]), str(body["rule"]), str(body["kind"]), str(body["severity"]), str(body["state"]),
                 str(body["event_type"]), str(body["window"]), int(body["window_start_ms"]),
                 int(body["window_end_ms"]), float(body["value"]), float(body["threshold"]),
                 tuple(sorted((str(k), str(v)) for k, v in body["labels"].items())))


def alert_headers(seq: int) -> Headers:
    return [(HEADER_ALERT_SEQ, str(seq).encode())]


def alert_seq(headers: Headers) -> int | None:
    """The sequence number of an alerts-topic record, or None if absent."""
    for name, value in headers:
        if name == HEADER_ALERT_SEQ:
            return int(value)
    return None


# -- the watermarks topic ---------------------------------------------------------------


def encode_mark(mark: Mark, published_at_ms: int) -> bytes:
    return orjson.dumps({"w": mark.watermark_ms, "idle": mark.idle, "at": published_at_ms})


def decode_mark(raw: bytes) -> Mark:
    body = orjson.loads(raw)
    watermark = body["w"]
    return Mark(None if watermark is None else int(watermark), bool(body.get("idle", False)))


# -- stage state (tables/store.py): keys and values ----------------------------------------

POSITION_KEY = b"pos"
PARTIALS_PACK_PREFIX = b"kp|"  # stage 1's open partials, in packs (tables/packed.py)
TOTALS_PACK_PREFIX = b"tp|"  # stage 2's totals, in packs
_PER_KEY_PREFIXES = (b"k|", b"t|")  # the previous version's one record per window key
_FRONTIER_PREFIX = b"f|"
_LEDGER_PREFIX = b"l|"
_TRACK_PREFIX = b"a|t|"  # alert rule state of one (rule, event type): alerts.engine.Track
_CURSOR_PREFIX = b"a|c|"  # per window with rules: the next window start to judge, and the quiet run
ALERT_SEQ_KEY = b"a|seq"  # the next alert's sequence number (also in every cursor record: the larger counts)


@dataclass(frozen=True, slots=True)
class IngestPosition:
    """Stage 1's progress on one input partition, written after what it covers is durable.

    fold_next: the first offset not yet folded (its dead letter, late record and partials not
      yet sent); records before it are never judged again.
    archive_next: where the input resumes: every valid record before it is in a raw file
      (records from here to fold_next are read again for the archive only).
    frontier_ms: the frontier announced for this partition (windows ending at or before it closed).
    event_ms: the partition's credited event time (tables/watermark.py).
    """

    fold_next: int | None = None  # None: from the beginning of the topic
    archive_next: int | None = None
    frontier_ms: int | None = None
    event_ms: int | None = None


def encode_ingest_position(position: IngestPosition) -> bytes:
    return orjson.dumps({"fold": position.fold_next, "arch": position.archive_next, "f": position.frontier_ms,
                         "e": position.event_ms})


def decode_ingest_position(raw: bytes) -> IngestPosition:
    body = orjson.loads(raw)
    return IngestPosition(body["fold"], body["arch"], body["f"], body["e"])


class StateFormatError(RuntimeError):
    """A changelog written in a state format this version does not read."""


def _refuse_per_key_records(items: Mapping[bytes, bytes], changelog: str) -> None:
    if any(key.startswith(_PER_KEY_PREFIXES) for key in items):
        raise StateFormatError(f"{changelog} holds window keys stored one per record, by an earlier version: this "
                               "version stores them in packs, and the upgrade is a reset (README, \"Upgrading and "
                               "resetting\")")


def decode_ingest_state(items: Mapping[bytes, bytes], partition: int) -> tuple[IngestPosition, PartitionPartials]:
    """The position and the open partials (with their packs' books) of one stage-1 partition from its
    stored keys. A pack is a column body (encode_partial_columns), or an earlier version's
    `{"w": window, "s": start_ms, "e": [[event_type, partial], ...]}`."""
    _refuse_per_key_records(items, "the ingest changelog")
    raw = items.get(POSITION_KEY)
    position = decode_ingest_position(raw) if raw is not None else IngestPosition()
    partials = PartitionPartials(partition)
    for seq, raw_pack in sorted(packs_in(PARTIALS_PACK_PREFIX, items).items()):
        body = orjson.loads(raw_pack)
        if "c" in body:
            entries = [(str(event_type), (count, total, low, high, marker))
                       for event_type, count, total, low, high, marker in _column_entries(body)]
        else:
            entries = [(str(event_type), partial) for event_type, partial in body["e"]]
        partials.restore(seq, str(body["w"]), int(body["s"]), entries)
    partials.books.restored()
    return position, partials


def encode_export_position(next_offset: int) -> bytes:
    return orjson.dumps({"next": next_offset})


def frontier_state_key(partition: int) -> bytes:
    return _FRONTIER_PREFIX + str(partition).encode()


def ledger_state_key(window: str, start_ms: int) -> bytes:
    return _LEDGER_PREFIX + f"{window}|{start_ms}".encode()


def track_state_key(key: str) -> bytes:
    """`key` is alerts.engine.track_key: the rule name and the encoded event type."""
    return _TRACK_PREFIX + key.encode()


def encode_track(track: Track) -> bytes:
    return orjson.dumps(_track_body(track))


def _track_body(track: Track) -> dict[str, object]:
    return {"b": track.breaching, "n": track.normal, "f": track.firing, "h": track.history, "i": track.idle}


def _decode_track(body: dict[str, Any]) -> Track:
    return Track(int(body["b"]), int(body["n"]), bool(body["f"]), [float(x) for x in body["h"]], int(body["i"]))


def cursor_state_key(window: str) -> bytes:
    return _CURSOR_PREFIX + window.encode()


def encode_cursor(cursor: tuple[int, int], alert_seq: int, changed: Mapping[str, Track | None]) -> bytes:
    """A window's rule cursor after one judgement, with the partition's next alert number and every
    track that judgement changed: one record, so that a restore that has it has the whole judgement
    (the tracks' own keys, written after it, may be cut off by a crash; `decode_export_state` lays
    the newest cursor record's tracks over them)."""
    return orjson.dumps({"next": cursor[0], "quiet": cursor[1], "seq": alert_seq,
                         "tracks": {key: None if track is None else _track_body(track)
                                    for key, track in sorted(changed.items())}})


@dataclass(slots=True)
class ExportState:
    """Stage 2's state of one partials partition (see agents/export.py)."""

    next_offset: int | None  # where its input resumes; None: from the beginning
    windows: dict[tuple[str, int], InstanceTotals]  # (window, start) -> its open totals
    frontiers: dict[int, int]  # input partition -> frontier
    ledger: dict[tuple[str, int], int]  # (window, start) already exported -> its end
    tracks: dict[str, Track] = field(default_factory=dict)  # alerts.engine.track_key -> its rule state
    cursors: dict[str, tuple[int, int]] = field(default_factory=dict)  # window -> (next start to judge, quiet run)
    alert_seq: int = 0  # the next alert's sequence number
    books: PackBooks = field(default_factory=PackBooks, compare=False)  # the packs holding the totals

    def totals(self) -> dict[PartialKey, dict[int, list[float]]]:
        """Every open window key's partial per input partition (a copy; for tests and tools)."""
        return {PartialKey(instance.window, instance.start_ms, event_type): instance.parts(slot)
                for instance in self.windows.values() for slot, event_type in enumerate(instance.types)}


def encode_totals_columns(instance: InstanceTotals, slots: Sequence[int]) -> bytes:
    """Stage 2's pack of these slots of one window instance: the event types, and per input partition
    the columns of its partials (marker -1 where it sent none; count and marker integers)."""
    types = instance.types
    sources = {str(partition): _partial_columns(columns, slots)
               for partition, columns in sorted(instance.sources.items())}
    return orjson.dumps({"w": instance.window, "s": instance.start_ms, "t": [types[i] for i in slots], "p": sources})


def decode_export_state(items: Mapping[bytes, bytes]) -> ExportState:
    """Stage 2's state from its stored keys. A pack is a column body (encode_totals_columns), or an
    earlier version's `{"w": window, "s": start_ms, "e": [[event_type, {partition: partial}], ...]}`."""
    _refuse_per_key_records(items, "the export changelog")
    raw = items.get(POSITION_KEY)
    state = ExportState(None if raw is None else int(orjson.loads(raw)["next"]), {}, {}, {})
    windows, books = state.windows, state.books
    for seq, raw_pack in sorted(packs_in(TOTALS_PACK_PREFIX, items).items()):
        body = orjson.loads(raw_pack)
        window, start_ms = str(body["w"]), int(body["s"])
        instance = windows.get((window, start_ms))
        if instance is None:
            instance = windows[(window, start_ms)] = InstanceTotals(window, start_ms)
        books.restore_empty(seq)
        if "t" in body:
            entries = [(str(t), {}) for t in body["t"]]
            for partition, columns in body["p"].items():
                rows = zip(*_columns_of(columns), strict=True)
                for (_, parts), partial in zip(entries, rows, strict=True):
                    if partial[4] != ABSENT:
                        parts[int(partition)] = partial
        else:
            entries = [(str(event_type), {int(p): partial for p, partial in parts.items()})
                       for event_type, parts in body["e"]]
        for event_type, parts in entries:
            slot = instance.slot(event_type)
            instance.set(slot, parts)
            books.restore(instance.holder, slot, seq)
    books.restored()
    for empty in [key for key, instance in windows.items() if not instance.types]:
        del windows[empty]
    raw_seq = items.get(ALERT_SEQ_KEY)
    if raw_seq is not None:
        state.alert_seq = int(orjson.loads(raw_seq))
    judged: dict[str, Track | None] = {}
    for key, value in items.items():
        if key.startswith(_FRONTIER_PREFIX):
            state.frontiers[int(key[len(_FRONTIER_PREFIX):])] = int(orjson.loads(value))
        elif key.startswith(_LEDGER_PREFIX):
            window, start = key[len(_LEDGER_PREFIX):].decode().split("|")
            state.ledger[(window, int(start))] = int(orjson.loads(value))
        elif key.startswith(_TRACK_PREFIX):
            state.tracks[key[len(_TRACK_PREFIX):].decode()] = _decode_track(orjson.loads(value))
        elif key.startswith(_CURSOR_PREFIX):
            body = orjson.loads(value)
            state.cursors[key[len(_CURSOR_PREFIX):].decode()] = (int(body["next"]), int(body["quiet"]))
            state.alert_seq = max(state.alert_seq, int(body["seq"]))
            judged.update({k: None if t is None else _decode_track(t) for k, t in body["tracks"].items()})
    for key, track in judged.items():  # the last judgement of each window, whole
        if track is None:
            state.tracks.pop(key, None)
        else:
            state.tracks[key] = track
    return state
