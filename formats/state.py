"""The stages' changelogs (`{app_id}-ingest-state`, `{app_id}-export-state`, compacted): every key and
value a stage stores for one of its input partitions, in that partition of its changelog
(tables/store.py keeps them; tables/state.py builds a stage's state from them).

Stage 1 (INGEST_STATE_VERSION 4)::

    pos                  {"v": 1, "fold": fold_next, "arch": archive_next, "f": frontier_ms, "e": event_ms}
    kp|<16 hex digits>   a pack of one window instance's open partials: the partials message body
                         (formats/partials.py, generation 3, or 4 with several measures) that carried
                         them, the same bytes

Stage 2 (EXPORT_STATE_VERSION 4)::

    pos                  {"v": 1, "next": next input offset}
    tp|<16 hex digits>   a pack of one window instance's totals: {"v": 3, "w": window, "s": start_ms,
                         "t": [key...], "p": {input partition: five columns}} (marker -1 where that
                         partition sent no partial of the key, and a partition that sent none of the
                         pack's keys left out; count and marker integers); with several
                         measures {"v": 4, "n": M, ...}, M values per key in count, sum, min and max
    f|<input partition>  that partition's frontier (a number)
    l|<window>|<start>   an exported window instance: its end (a number)
    a|t|<track key>      an alert rule's state for one (rule, event type): {"b", "n", "f", "h", "i"}
    a|c|<window>         a window's rule cursor after a judgement: {"next", "quiet", "seq", "tracks"}
    a|seq                the next alert's sequence number (a number)

A pack's key sorts as written (tables/packed.py says how packs are kept). Generations still read: a
pack body without ``"v"`` (written before the version field; stage 1's recognised by its columns
``"c"``, stage 2's by ``"t"``) and packs of generation 2, ``{"w", "s", "e": [[event_type, partial or
{partition: partial}], ...]}``; positions without ``"v"``. Generation 1 stored one record per window
key (``k|...``, ``t|...``): it is refused with StateFormatError, its upgrade is a reset (docs/operations.md,
"Upgrading and resetting").
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

import numpy as np
import orjson

from formats.alerts import Track
from formats.partials import Columns, Instance, PartialColumns, columns_of, decode_stage_message, partial_columns

__all__ = [
    "ABSENT_MARKER",
    "ALERT_SEQ_KEY",
    "EXPORT_STATE_VERSION",
    "INGEST_STATE_VERSION",
    "PACK_BYTES",
    "PARTIALS_PACK_PREFIX",
    "POSITION_KEY",
    "TOTALS_PACK_PREFIX",
    "IngestPosition",
    "StateFormatError",
    "check_generation",
    "cursor_state_key",
    "decode_cursor",
    "decode_export_position",
    "decode_ingest_pack",
    "decode_ingest_position",
    "decode_number",
    "decode_totals_pack",
    "decode_track",
    "encode_cursor",
    "encode_export_position",
    "encode_ingest_position",
    "encode_number",
    "encode_totals_columns",
    "encode_track",
    "export_items",
    "frontier_state_key",
    "ledger_state_key",
    "pack_key",
    "packs_in",
    "track_state_key",
]

INGEST_STATE_VERSION: Final = 4
EXPORT_STATE_VERSION: Final = 4
_POSITION_VERSION: Final = 1
_PACK_VERSION: Final = 3  # one measure
_MEASURES_PACK_VERSION: Final = 4  # several: with "n", their number

POSITION_KEY: Final = b"pos"
PARTIALS_PACK_PREFIX: Final = b"kp|"  # stage 1's open partials, in packs
TOTALS_PACK_PREFIX: Final = b"tp|"  # stage 2's totals, in packs
_PER_KEY_PREFIXES: Final = (b"k|", b"t|")  # generation 1: one record per window key
FRONTIER_PREFIX: Final = b"f|"
LEDGER_PREFIX: Final = b"l|"
TRACK_PREFIX: Final = b"a|t|"
CURSOR_PREFIX: Final = b"a|c|"
ALERT_SEQ_KEY: Final = b"a|seq"  # also in every cursor record: the larger counts
ABSENT_MARKER: Final = -1  # in a totals pack: the input partition sent no partial of that slot
# A pack's value stays well below Kafka's default 1 MiB record limit (event types are at most
# 256 characters, so an entry is a few KB at most).
PACK_BYTES: Final = 256 * 1024


class StateFormatError(RuntimeError):
    """A changelog written in a state format this version does not read."""


def check_generation(items: Mapping[bytes, bytes], changelog: str) -> None:
    """Refuse a changelog of generation 1 (one record per window key)."""
    if any(key.startswith(_PER_KEY_PREFIXES) for key in items):
        raise StateFormatError(f"{changelog} holds window keys stored one per record, by an earlier version: this "
                               "version stores them in packs, and the upgrade is a reset (docs/operations.md, "
                               "\"Upgrading and resetting\")")


def _checked(body: dict[str, Any], version: int, what: str) -> dict[str, Any]:
    if body.get("v", version) != version:
        raise StateFormatError(f"{what} of unknown version {body['v']!r}: written by a newer version of the pipeline")
    return body


# -- numbers (frontiers, ledger ends, the alert sequence) ------------------------------------------


def encode_number(value: int) -> bytes:
    return orjson.dumps(value)


def decode_number(raw: bytes) -> int:
    return int(orjson.loads(raw))


# -- packs ----------------------------------------------------------------------------------------


def pack_key(prefix: bytes, seq: int) -> bytes:
    return prefix + b"%016x" % seq


def packs_in(prefix: bytes, items: Mapping[bytes, bytes]) -> dict[int, bytes]:
    """The packs among a stage's stored items, by sequence number."""
    return {int(key[len(prefix):], 16): value for key, value in items.items() if key.startswith(prefix)}


def decode_ingest_pack(raw: bytes) -> tuple[str, int, list[tuple[str, Sequence[float]]], int]:
    """(window, start_ms, [(key, partial)...], measures) of a stage-1 pack: a partials message body of
    generation 3 or 4, or a pack of generation 2."""
    body = orjson.loads(raw)
    if "c" in body:
        try:
            message = decode_stage_message(raw)
        except ValueError as exc:
            raise StateFormatError(f"a stage-1 pack: {exc}") from None
        assert isinstance(message, PartialColumns)
        return message.window, message.start_ms, [(key.event_type, partial) for key, partial in message.entries], \
            message.measures
    return str(body["w"]), int(body["s"]), [(str(key), partial) for key, partial in body["e"]], 1


class SourceRows(Columns, Protocol):
    """One input partition's partials in stage 2 (tables.totals.SourceColumns): the columns by row, and the
    row of each slot."""

    def rows(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


class TotalsColumns(Instance, Protocol):
    """Stage 2's totals of one window instance (tables.totals.InstanceTotals): rows per input partition."""

    @property
    def sources(self) -> Mapping[int, SourceRows]: ...


def encode_totals_columns(instance: TotalsColumns, slots: Sequence[int]) -> bytes:
    """Stage 2's pack of these slots of one window instance (see the module doc): the columns of every
    input partition that sent a partial of one of them."""
    types = instance.types
    chosen = np.asarray(slots, dtype=np.intp)
    sources = {str(partition): body for partition, columns in sorted(instance.sources.items())
               if (body := _source_columns(columns, chosen)) is not None}
    if instance.measures == 1:
        return orjson.dumps({"v": _PACK_VERSION, "w": instance.window, "s": instance.start_ms,
                             "t": [types[i] for i in slots], "p": sources}, option=orjson.OPT_SERIALIZE_NUMPY)
    return orjson.dumps({"v": _MEASURES_PACK_VERSION, "w": instance.window, "s": instance.start_ms,
                         "n": instance.measures, "t": [types[i] for i in slots], "p": sources},
                        option=orjson.OPT_SERIALIZE_NUMPY)


def _source_columns(columns: SourceRows, slots: np.ndarray) -> dict[str, np.ndarray] | None:
    """One input partition's five columns of these slots in a pack: its partial of each, and for a slot it
    sent none of, zeros and ABSENT_MARKER; None if it sent none of them."""
    rows, held = columns.rows(slots)
    if not held.any():
        return None
    absent = ~held
    body = partial_columns(columns, rows)
    if absent.any():
        cells = absent if columns.measures == 1 else np.repeat(absent, columns.measures)
        for name in ("c", "sum", "min", "max"):
            body[name][cells] = 0
        body["m"][absent] = ABSENT_MARKER
    return body


def decode_totals_pack(raw: bytes) -> tuple[str, int, list[tuple[str, dict[int, Sequence[float]]]], int]:
    """(window, start_ms, [(key, {input partition: partial})...], measures) of a stage-2 pack; a partition
    without a partial of a key is left out of its dict."""
    body = orjson.loads(raw)
    window, start_ms = str(body["w"]), int(body["s"])
    if "t" in body:
        version = body.get("v", _PACK_VERSION)
        measures = 1 if version == _PACK_VERSION else body["n"] if version == _MEASURES_PACK_VERSION else 0
        if type(measures) is not int or measures < 1:
            raise StateFormatError(f"a stage-2 pack of unknown version {version!r}: written by a newer version "
                                   "of the pipeline")
        entries: list[tuple[str, dict[int, Sequence[float]]]] = [(str(t), {}) for t in body["t"]]
        for partition, columns in body["p"].items():
            counts, sums, lows, highs, markers = columns_of(columns)
            for j, ((_, parts), marker) in enumerate(zip(entries, markers, strict=True)):
                if marker == ABSENT_MARKER:
                    continue
                partial: list[float] = []
                for k in range(j * measures, j * measures + measures):
                    partial += [counts[k], sums[k], lows[k], highs[k]]
                parts[int(partition)] = [*partial, marker]
        return window, start_ms, entries, measures
    return window, start_ms, [(str(key), {int(p): partial for p, partial in parts.items()})
                              for key, parts in body["e"]], 1


# -- positions ------------------------------------------------------------------------------------


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
    return orjson.dumps({"v": _POSITION_VERSION, "fold": position.fold_next, "arch": position.archive_next,
                         "f": position.frontier_ms, "e": position.event_ms})


def decode_ingest_position(raw: bytes) -> IngestPosition:
    body = _checked(orjson.loads(raw), _POSITION_VERSION, "a stage-1 position")
    return IngestPosition(body["fold"], body["arch"], body["f"], body["e"])


def encode_export_position(next_offset: int) -> bytes:
    return orjson.dumps({"v": _POSITION_VERSION, "next": next_offset})


def decode_export_position(raw: bytes) -> int:
    return int(_checked(orjson.loads(raw), _POSITION_VERSION, "a stage-2 position")["next"])


# -- stage 2's other keys -------------------------------------------------------------------------


def frontier_state_key(partition: int) -> bytes:
    return FRONTIER_PREFIX + str(partition).encode()


def ledger_state_key(window: str, start_ms: int) -> bytes:
    return LEDGER_PREFIX + f"{window}|{start_ms}".encode()


def track_state_key(key: str) -> bytes:
    """`key` is alerts.engine.track_key: the rule name and the encoded event type."""
    return TRACK_PREFIX + key.encode()


def cursor_state_key(window: str) -> bytes:
    return CURSOR_PREFIX + window.encode()


def encode_track(track: Track) -> bytes:
    return orjson.dumps(_track_body(track))


def _track_body(track: Track) -> dict[str, object]:
    return {"b": track.breaching, "n": track.normal, "f": track.firing, "h": track.history, "i": track.idle}


def decode_track(body: dict[str, Any]) -> Track:
    return Track(int(body["b"]), int(body["n"]), bool(body["f"]), [float(x) for x in body["h"]], int(body["i"]))


def encode_cursor(cursor: tuple[int, int], alert_seq: int, changed: Mapping[str, Track | None]) -> bytes:
    """A window's rule cursor after one judgement, with the partition's next alert number and every
    track that judgement changed: one record, so that a restore that has it has the whole judgement
    (the tracks' own keys, written after it, may be cut off by a crash; tables/state.py lays the
    newest cursor record's tracks over them)."""
    return orjson.dumps({"next": cursor[0], "quiet": cursor[1], "seq": alert_seq,
                         "tracks": {key: None if track is None else _track_body(track)
                                    for key, track in sorted(changed.items())}})


@dataclass(frozen=True, slots=True)
class Cursor:
    next_start_ms: int
    quiet: int
    alert_seq: int
    tracks: dict[str, Track | None]  # the judgement's changed tracks (None: dropped)


def decode_cursor(raw: bytes) -> Cursor:
    body = orjson.loads(raw)
    return Cursor(int(body["next"]), int(body["quiet"]), int(body["seq"]),
                  {k: None if t is None else decode_track(t) for k, t in body["tracks"].items()})


# -- reading stage 2's keys -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportItems:
    """Stage 2's stored items by kind, decoded (packs left to decode_totals_pack)."""

    next_offset: int | None
    packs: dict[int, bytes]
    frontiers: dict[int, int]
    ledger: dict[tuple[str, int], int]
    tracks: dict[str, Track]
    cursors: dict[str, Cursor]
    alert_seq: int | None


def export_items(items: Mapping[bytes, bytes]) -> ExportItems:
    """Stage 2's items, each decoded by its key (see the module doc)."""
    check_generation(items, "the export changelog")
    raw = items.get(POSITION_KEY)
    raw_seq = items.get(ALERT_SEQ_KEY)
    found = ExportItems(None if raw is None else decode_export_position(raw), packs_in(TOTALS_PACK_PREFIX, items),
                        {}, {}, {}, {}, None if raw_seq is None else decode_number(raw_seq))
    for key, value in _by_prefix(items, (FRONTIER_PREFIX, LEDGER_PREFIX, TRACK_PREFIX, CURSOR_PREFIX)):
        if key.startswith(FRONTIER_PREFIX):
            found.frontiers[int(key[len(FRONTIER_PREFIX):])] = decode_number(value)
        elif key.startswith(LEDGER_PREFIX):
            window, start = key[len(LEDGER_PREFIX):].decode().split("|")
            found.ledger[(window, int(start))] = decode_number(value)
        elif key.startswith(TRACK_PREFIX):
            found.tracks[key[len(TRACK_PREFIX):].decode()] = decode_track(orjson.loads(value))
        else:
            found.cursors[key[len(CURSOR_PREFIX):].decode()] = decode_cursor(value)
    return found


def _by_prefix(items: Mapping[bytes, bytes], prefixes: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
    return ((key, value) for key, value in items.items() if key.startswith(prefixes))
