"""Where a previous run's dead-letter and late output stopped, read from the topics themselves.

Records in `events-dlq` and `events-late` go to the partition of their source record and
carry its offset in a header. After a restart, the last record of each partition says
which source offsets already have their output, so a replay does not write them twice:
the output topic is its own ledger, as in Kafka Connect's exactly-once sinks.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from models import source_offset
from settings import KafkaSettings

# An empty fetch ends the scan: the broker answers one within fetch_max_wait_ms.
FETCH_MAX_WAIT_MS = 200


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


async def last_source_offsets(kafka: KafkaSettings, topic: str, partitions: Iterable[int]) -> dict[int, int]:
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
        # Read on until the partitions are drained rather than trusting the end offset:
        # Tansu reports it as the base offset of the last record batch + 1, so the
        # last record may lie beyond it.
        while batches := await consumer.getmany(*tps, timeout_ms=2 * FETCH_MAX_WAIT_MS):
            for tp, records in batches.items():
                for record in records:
                    offset = source_offset([(name, bytes(value)) for name, value in record.headers])
                    if offset is not None:
                        found[tp.partition] = max(found[tp.partition], offset)
        return found
    finally:
        await consumer.stop()
