"""Every topic the pipeline uses, named in one place from settings."""

from __future__ import annotations

from dataclasses import dataclass

from settings import Settings


@dataclass(frozen=True, slots=True)
class Topics:
    events: str  # input, keyed by user_id
    dead_letters: str
    late: str
    alerts: str  # alerts fired and resolved by stage 2's rules, one partition per stage-2 partition
    partials: str  # stage 1 -> stage 2, keyed by (window, window_start, event_type), partitioned by type
    watermarks: str  # each input partition's watermark, published by its owner
    ingest_state: str  # stage 1's changelog: per input partition, partials and position
    export_state: str  # stage 2's changelog: per partials partition, totals, frontiers, ledger, position

    def internal(self) -> tuple[str, ...]:
        return (self.partials, self.watermarks, self.ingest_state, self.export_state)

    def changelogs(self) -> tuple[str, ...]:
        return (self.ingest_state, self.export_state)


def topics_for(settings: Settings) -> Topics:
    kafka, app_id = settings.kafka, settings.app_id
    return Topics(
        events=kafka.topic_events,
        dead_letters=kafka.topic_dlq,
        late=kafka.topic_late,
        alerts=kafka.topic_alerts,
        partials=f"{app_id}-window-partials",
        watermarks=f"{app_id}-watermarks",
        ingest_state=f"{app_id}-ingest-state",
        export_state=f"{app_id}-export-state",
    )
