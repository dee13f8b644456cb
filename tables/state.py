"""Each stage's state of one input partition, built from its stored items (formats/state.py lays them out).

The stages restore with these (agents/ingest.py, agents/export.py), and so do the batch layer
(batch/stage2.py) and the bench: one decoding of each changelog. tables/changelog.py reads the items.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from formats.alerts import Track
from formats.partials import PartialKey
from formats.state import (
    PARTIALS_PACK_PREFIX,
    POSITION_KEY,
    IngestPosition,
    check_generation,
    decode_ingest_pack,
    decode_ingest_position,
    decode_totals_pack,
    export_items,
    packs_in,
)
from tables.packed import PackBooks
from tables.partials import PartitionPartials
from tables.totals import InstanceTotals

__all__ = ["ExportState", "decode_export_state", "decode_ingest_state"]


def decode_ingest_state(items: Mapping[bytes, bytes], partition: int) -> tuple[IngestPosition, PartitionPartials]:
    """The position and the open partials (with their packs' books) of one stage-1 partition."""
    check_generation(items, "the ingest changelog")
    raw = items.get(POSITION_KEY)
    position = decode_ingest_position(raw) if raw is not None else IngestPosition()
    partials = PartitionPartials(partition)
    for seq, raw_pack in sorted(packs_in(PARTIALS_PACK_PREFIX, items).items()):
        partials.restore(seq, *decode_ingest_pack(raw_pack))
    partials.books.restored()
    return position, partials


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


def decode_export_state(items: Mapping[bytes, bytes]) -> ExportState:
    """Stage 2's state from its stored items."""
    stored = export_items(items)
    state = ExportState(stored.next_offset, {}, stored.frontiers, stored.ledger, stored.tracks)
    windows, books = state.windows, state.books
    for seq, raw_pack in sorted(stored.packs.items()):
        window, start_ms, entries, measures = decode_totals_pack(raw_pack)
        instance = windows.get((window, start_ms))
        if instance is None:
            instance = windows[(window, start_ms)] = InstanceTotals(window, start_ms, measures)
        books.restore_empty(seq)
        for event_type, parts in entries:
            slot = instance.slot(event_type)
            instance.set(slot, parts)
            books.restore(instance.holder, slot, seq)
    books.restored()
    for empty in [key for key, instance in windows.items() if not instance.types]:
        del windows[empty]
    if stored.alert_seq is not None:
        state.alert_seq = stored.alert_seq
    judged: dict[str, Track | None] = {}
    for window, cursor in stored.cursors.items():
        state.cursors[window] = (cursor.next_start_ms, cursor.quiet)
        state.alert_seq = max(state.alert_seq, cursor.alert_seq)
        judged.update(cursor.tracks)
    for key, track in judged.items():  # the last judgement of each window, whole
        if track is None:
            state.tracks.pop(key, None)
        else:
            state.tracks[key] = track
    return state
