"""The last records of topics: where the dead-letter, late and alert topics stand (their own ledgers),
and the newest watermarks. Reads to a partition's real end are tables/changelog.py's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from formats.side_outputs import Headers, source_offset
from tables.changelog import Records, read_to_end

# How far back the first read of a partition's tail starts, and how much further each next read goes.
TAIL_FIRST_BACK = 8
TAIL_GROWTH = 16


async def last_records(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> Records:
    """The last record of each partition (with some before it) to the end, in offset order, for each partition
    that has one; the consumer is then assigned every partition at its end, so that a follower
    (agents/watermarks.py) reads on from there. The last offsets of a log written with transactions hold
    commit markers, which no read returns, and an aborted or still open transaction's records, which
    read_committed skips: a read that finds no record starts again further back (8, 128, 2048, ... offsets
    before the end), down to the log's start."""
    tps = list(tps)
    consumer.assign(tps)
    ends = await consumer.end_offsets(tps)
    firsts = await consumer.beginning_offsets(tps)
    back = TAIL_FIRST_BACK
    pending = [tp for tp in tps if ends[tp] > firsts[tp]]
    resume = {tp: ends[tp] for tp in tps if tp not in pending}  # where each partition's reading ended
    while pending:
        found: set[TopicPartition] = set()
        starts = {tp: max(ends[tp] - back, firsts[tp]) for tp in pending}
        async for tp, records in read_to_end(consumer, starts):
            found.add(tp)
            yield tp, records
        for tp in starts:  # each read to its end; the next pass's assignment drops them
            resume[tp] = await consumer.position(tp)
        pending = [tp for tp in pending if tp not in found and ends[tp] - back > firsts[tp]]
        back *= TAIL_GROWTH
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, resume[tp])


async def last_source_offsets(consumer: AIOKafkaConsumer, topic: str, partitions: Iterable[int], *,
                              position: Callable[[Headers], int | None] = source_offset) -> dict[int, int]:
    """Source offset of the last record in each partition of an output topic (-1 where there is none).

    Dead-letter and late records go to the partition of their source record and carry its
    offset in a header, so the last one says which source offsets already have their output:
    the output topic is its own ledger, as in Kafka Connect's exactly-once sinks. Alerts carry
    their sequence number instead (`position=formats.alerts.alert_seq`).
    """
    found = dict.fromkeys(partitions, -1)
    async for tp, records in last_records(consumer, [TopicPartition(topic, p) for p in found]):
        for record in records:
            offset = position([(name, bytes(value)) for name, value in record.headers])
            if offset is not None:
                found[tp.partition] = max(found[tp.partition], offset)
    return found
