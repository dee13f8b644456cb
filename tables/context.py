"""Writing a faust table for a given partition outside of per-event iteration.

faust's table and RocksDB store pick the partition of a write (its changelog partition
and its local database) from the *current event*. The pipeline writes once per key per
batch, or from a timer, where the current event is some other partition's or none at
all. This context manager sets a stand-in current event for the partition being
written, so every write lands in the partition that owns the key. It relies on
faust-streaming 0.15.3's `faust.streams._current_event` (pinned in requirements.txt).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from faust import streams


class _StandInMessage:
    __slots__ = ("topic", "partition")

    def __init__(self, topic: str, partition: int) -> None:
        self.topic = topic
        self.partition = partition


class _StandInEvent:
    __slots__ = ("message", "__weakref__")

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _StandInMessage(topic, partition)


@contextmanager
def writing_partition(topic: str, partition: int) -> Iterator[None]:
    """Within the block, table writes and reads go to `partition` of a table co-partitioned with `topic`."""
    stand_in = _StandInEvent(topic, partition)
    token = streams._current_event.set(weakref.ref(stand_in))  # type: ignore[arg-type]
    try:
        yield
    finally:
        streams._current_event.reset(token)
