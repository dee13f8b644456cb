"""Every message shape the pipeline writes to Kafka, with its one serialization path.

- `window-partials` (internal, stage 1 -> stage 2): a cumulative partial aggregate of one
  input partition for one (window, window_start, event_type), or a frontier marker.
- `events-dlq`: the original record bytes, untouched, with the reason and the source
  position in headers (the Kafka Connect convention, so existing tooling can read them).
- `events-late`: the original record bytes with the source position and the windows it
  missed in headers.

Table keys are strings built here too, so stage 1, stage 2 and the web views agree.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from events import Rejection
from keys import decode_key_part, encode_key_part
from tables.partials import PartialKey

HEADER_REASON = "dlq.reason"
HEADER_DETAIL = "dlq.detail"
HEADER_TOPIC = "source.topic"
HEADER_PARTITION = "source.partition"
HEADER_OFFSET = "source.offset"
HEADER_MISSED = "late.windows"

Headers = list[tuple[str, bytes]]


class PartialMessage(NamedTuple):
    partition: int  # input partition the partial covers
    key: PartialKey
    partial: list[float]  # [count, sum, min, max, marker]


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


def partial_table_key(partition: int, key: PartialKey) -> str:
    """Stage-1 table key: the input partition first, so each partition owns its keys."""
    return f"{partition}|{window_key(key)}"


def parse_partial_table_key(text: str) -> tuple[int, PartialKey]:
    partition, rest = text.split("|", 1)
    return int(partition), parse_window_key(rest)


def encode_partial(message: PartialMessage) -> tuple[bytes, bytes]:
    key = message.key
    body = {"p": message.partition, "w": key.window, "s": key.start_ms, "t": key.event_type,
            "a": message.partial}
    return window_key(key).encode(), orjson.dumps(body)


def encode_frontier(message: FrontierMessage) -> bytes:
    return orjson.dumps({"p": message.partition, "f": message.frontier_ms, "n": message.source_partitions,
                         "at": message.announced_at_ms})


def decode_stage_message(raw: bytes) -> PartialMessage | FrontierMessage:
    body = orjson.loads(raw)
    if "f" in body:
        return FrontierMessage(int(body["p"]), int(body["f"]), int(body["n"]), int(body["at"]))
    key = PartialKey(str(body["w"]), int(body["s"]), str(body["t"]))
    count, total, low, high, marker = body["a"]
    # Count and marker stay integers: an offset beyond 2**53 must not lose precision.
    return PartialMessage(int(body["p"]), key, [int(count), float(total), float(low), float(high), int(marker)])


def _source_headers(topic: str, partition: int, offset: int) -> Headers:
    return [(HEADER_TOPIC, topic.encode()), (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode())]


def dead_letter_headers(topic: str, partition: int, offset: int, rejection: Rejection) -> Headers:
    return [(HEADER_REASON, rejection.reason.encode()), (HEADER_DETAIL, rejection.detail.encode()),
            *_source_headers(topic, partition, offset)]


def late_headers(topic: str, partition: int, offset: int, missed: tuple[tuple[str, int], ...]) -> Headers:
    windows = ",".join(f"{name}@{start_ms}" for name, start_ms in missed)
    return [*_source_headers(topic, partition, offset), (HEADER_MISSED, windows.encode())]


def source_offset(headers: Headers) -> int | None:
    """The input offset a DLQ or late record came from, or None if absent."""
    for name, value in headers:
        if name == HEADER_OFFSET:
            return int(value)
    return None
