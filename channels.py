"""Every topic and table the pipeline uses, declared in one place from settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

if TYPE_CHECKING:
    from faust.types import TableT, TopicT

    from app import PipelineApp


@dataclass(frozen=True, slots=True)
class Channels:
    events: TopicT
    dead_letters: TopicT
    late: TopicT
    partials: TopicT  # stage 1 -> stage 2, keyed by (window, window_start, event_type)
    # Stage 1, co-partitioned with `events`: open partial aggregates with offset markers,
    # and each input partition's frontier and highest event time.
    partial_table: TableT[str, Any]
    progress_table: TableT[str, Any]
    # Stage 2, co-partitioned with `partials`: merged partials, frontiers, export ledger.
    totals_table: TableT[str, Any]
    frontier_table: TableT[str, Any]
    ledger_table: TableT[str, Any]


def declare(app: PipelineApp) -> Channels:
    kafka = app.settings.kafka
    partitions = kafka.topic_partitions

    def topic(name: str) -> TopicT:
        return app.topic(name, key_serializer="raw", value_serializer="raw", partitions=partitions)

    def table(name: str, help_text: str) -> TableT[str, Any]:
        schema = faust.Schema(key_type=str, value_type=None, key_serializer="json", value_serializer="json")
        return app.Table(name, schema=schema, partitions=partitions, help=help_text)

    return Channels(
        events=topic(kafka.topic_events),
        dead_letters=topic(kafka.topic_dlq),
        late=topic(kafka.topic_late),
        partials=topic(f"{app.conf.id}-window-partials"),
        partial_table=table("partials", "Stage 1: open partial aggregates per input partition."),
        progress_table=table("ingest-progress", "Stage 1: frontier and highest event time per partition."),
        totals_table=table("window-totals", "Stage 2: latest partial of each input partition per window key."),
        frontier_table=table("frontiers", "Stage 2: frontier of each input partition, per stage-2 partition."),
        ledger_table=table("export-ledger", "Stage 2: windows already exported, so replays never re-open them."),
    )
