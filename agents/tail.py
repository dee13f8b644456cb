"""Where a previous run's dead-letter and late output stopped, read from the topics themselves.

Records in `events-dlq` and `events-late` go to the partition of their source record and
carry its offset in a header. After a restart, the last record of each partition says
which source offsets already have their output, so a replay does not write them twice:
the output topic is its own ledger, as in Kafka Connect's exactly-once sinks.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from models import source_offset
from settings import KafkaSettings

FETCH_MAX_WAIT_MS = 200
# A busy broker may answer the first fetches of a tail read slowly; past this, starting
# would risk writing the previous run's dead letters or late records a second time.
TAIL_DEADLINE_S = 60.0


class TailReadError(RuntimeError):
    """The end of an output topic could not be read in time."""


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """aiokafka options equivalent to the faust app's broker settings."""
    options: dict[str, Any] = {
        "bootstrap_servers": list(kafka.bootstrap_servers),
        "security_protocol": kafka.security_protocol,
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = ssl.create_default_context()
    if kafka.security_protocol.startswith("SASL"):
        options.update(sasl_mechanism=kafka.sasl_mechanism, sasl_plain_username=kafka.sasl_username,
                       sasl_plain_password=kafka.sasl_password)
    return options


async def last_source_offsets(kafka: KafkaSettings, topic: str, partitions: Iterable[int],
                              deadline_s: float = TAIL_DEADLINE_S) -> dict[int, int]:
    """Source offset of the last record in each partition of `topic` (-1 where it is empty)."""
    consumer = AIOKafkaConsumer(enable_auto_commit=False, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                **client_options(kafka))
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        found = {tp.partition: -1 for tp in tps}
        for tp in tps:
            consumer.seek(tp, max(ends[tp] - 1, 0))
        # Every non-empty partition must deliver its record at end - 1 (an empty fetch may
        # only mean a slow broker); then read on until a fetch comes back empty, because
        # Tansu reports the end as the base offset of the last record batch + 1, so the
        # last records may lie beyond it.
        waiting = {tp for tp in tps if ends[tp] > 0}
        clock = asyncio.get_running_loop().time
        give_up_at = clock() + deadline_s
        while True:
            batches = await consumer.getmany(*tps, timeout_ms=2 * FETCH_MAX_WAIT_MS)
            for tp, records in batches.items():
                for record in records:
                    if record.offset >= ends[tp] - 1:
                        waiting.discard(tp)
                    offset = source_offset([(name, bytes(value)) for name, value in record.headers])
                    if offset is not None:
                        found[tp.partition] = max(found[tp.partition], offset)
            if not batches and not waiting:
                return found
            if clock() > give_up_at:
                raise TailReadError(f"could not read the end of {topic} partitions "
                                    f"{sorted(tp.partition for tp in waiting)} within {deadline_s:.0f}s")
    finally:
        await consumer.stop()
