"""Every topic the pipeline uses: its name (from settings), its layout, and its creation.

Every stage assumes that input partitions are numbered 0..TOPIC_PARTITIONS-1: the low
watermark is taken over exactly those, and a window closes once all of them have passed
it. A topic with another partition count would close windows too early (data called
late) or never, so the worker refuses to start and names both numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from settings import Settings
from tables.store import CHANGELOG_DELETE_RETENTION_MS

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36
# The changelogs (and the watermarks) keep the newest record per key; deletions are kept as long as the
# state stores rely on (tables/store.py, which rebuilds a local state older than that).
CHANGELOG_CONFIGS = {"cleanup.policy": "compact", "delete.retention.ms": str(CHANGELOG_DELETE_RETENTION_MS)}


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


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count the pipeline cannot work with."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    compacted: bool = False  # changelogs: only the newest record per key matters


def topic_specs(topics: Topics, partitions: int) -> list[TopicSpec]:
    """Every topic the worker needs, with its layout."""
    return [TopicSpec(topics.events, partitions), TopicSpec(topics.dead_letters, partitions),
            TopicSpec(topics.late, partitions), TopicSpec(topics.alerts, partitions),
            TopicSpec(topics.partials, partitions),
            TopicSpec(topics.watermarks, partitions, compacted=True),  # keyed by partition: the last mark counts
            TopicSpec(topics.ingest_state, partitions, compacted=True),
            TopicSpec(topics.export_state, partitions, compacted=True)]


async def ensure_topics(options: dict[str, Any], specs: Sequence[TopicSpec], replication: int) -> None:
    admin = AIOKafkaAdminClient(**options)
    await admin.start()
    try:
        # List first: describing a missing topic makes some brokers (Tansu) create it with a default layout.
        existing = set(await admin.list_topics())
        present = [spec for spec in specs if spec.name in existing]
        if present:
            described = {item["topic"]: item for item in await admin.describe_topics([s.name for s in present])}
            for spec in present:
                found = len(described[spec.name]["partitions"])
                if found != spec.partitions:
                    raise TopicLayoutError(f"topic {spec.name} has {found} partitions but TOPIC_PARTITIONS is "
                                           f"{spec.partitions}: set TOPIC_PARTITIONS={found}, or use a topic with "
                                           f"{spec.partitions} partitions")
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return
        response = await admin.create_topics([
            NewTopic(spec.name, spec.partitions, replication,
                     topic_configs=CHANGELOG_CONFIGS if spec.compacted else {})
            for spec in missing])
        for topic, code, message in response.topic_errors:
            if code not in (0, TOPIC_ALREADY_EXISTS):  # another worker may create it at the same moment
                raise TopicLayoutError(f"could not create topic {topic}: error {code} ({message})")
        log.info("created topics %s", ", ".join(spec.name for spec in missing))
    finally:
        await admin.close()
