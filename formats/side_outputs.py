"""The dead-letter and late topics' records (`events-dlq`, `events-late`): SIDE_OUTPUT_VERSION 1.

Both carry the original record's bytes untouched, its key and timestamp, and headers in the Kafka
Connect convention, so existing tooling can read them:

- ``source.topic``, ``source.partition``, ``source.offset``: where the original came from (both);
- ``dlq.reason`` (one of formats.events.REJECTION_REASONS) and ``dlq.detail``: why it was rejected;
- ``late.windows``: the windows it missed, ``name@start_ms`` separated by commas;
- ``dlq.original.bytes``: the original's size, only on a record whose value was cut (a value over
  MAX_FORWARDED_BYTES, or one the broker refused, then cut to FALLBACK_FORWARDED_BYTES);
- ``source.header.<name>``: the original's own headers, renamed so they cannot collide with ours.

Version 1 is every header above, as since the first release; no header carries the version (a
consumer's tooling reads these records, and an added header is a change they would see). A change
of meaning would add a ``format.version`` header.
"""

from __future__ import annotations

from typing import Final

from formats.events import Rejection

__all__ = [
    "FALLBACK_FORWARDED_BYTES",
    "HEADER_DETAIL",
    "HEADER_MISSED",
    "HEADER_OFFSET",
    "HEADER_ORIGINAL_BYTES",
    "HEADER_PARTITION",
    "HEADER_REASON",
    "HEADER_TOPIC",
    "MAX_FORWARDED_BYTES",
    "SIDE_OUTPUT_VERSION",
    "SOURCE_HEADER_PREFIX",
    "Headers",
    "dead_letter_headers",
    "forwarded",
    "late_headers",
    "source_offset",
]

SIDE_OUTPUT_VERSION: Final = 1
HEADER_REASON: Final = "dlq.reason"
HEADER_DETAIL: Final = "dlq.detail"
HEADER_TOPIC: Final = "source.topic"
HEADER_PARTITION: Final = "source.partition"
HEADER_OFFSET: Final = "source.offset"
HEADER_MISSED: Final = "late.windows"
HEADER_ORIGINAL_BYTES: Final = "dlq.original.bytes"  # only on a dead letter whose value was cut
SOURCE_HEADER_PREFIX: Final = "source.header."  # the source record's own headers, renamed

# Dead letters and late records carry the original bytes up to this size, which Kafka's
# default broker limit (message.max.bytes, 1 MiB) accepts with their headers; a longer
# record is cut to it, and a broker that refuses even that gets the first FALLBACK bytes.
MAX_FORWARDED_BYTES: Final = 900 * 1024
FALLBACK_FORWARDED_BYTES: Final = 1024

Headers = list[tuple[str, bytes]]


def _source_headers(topic: str, partition: int, offset: int) -> Headers:
    return [(HEADER_TOPIC, topic.encode()), (HEADER_PARTITION, str(partition).encode()),
            (HEADER_OFFSET, str(offset).encode())]


def dead_letter_headers(topic: str, partition: int, offset: int, rejection: Rejection) -> Headers:
    return [(HEADER_REASON, rejection.reason.encode()), (HEADER_DETAIL, rejection.detail.encode()),
            *_source_headers(topic, partition, offset)]


def forwarded(raw: bytes, headers: Headers, max_bytes: int) -> tuple[bytes, Headers]:
    """The value and headers to forward an original record with: cut to max_bytes, saying its true size."""
    if len(raw) <= max_bytes:
        return raw, headers
    return raw[:max_bytes], [*headers, (HEADER_ORIGINAL_BYTES, str(len(raw)).encode())]


def late_headers(topic: str, partition: int, offset: int, missed: tuple[tuple[str, int], ...]) -> Headers:
    windows = ",".join(f"{name}@{start_ms}" for name, start_ms in missed)
    return [*_source_headers(topic, partition, offset), (HEADER_MISSED, windows.encode())]


def source_offset(headers: Headers) -> int | None:
    """The input offset a DLQ or late record came from, or None if absent."""
    for name, value in headers:
        if name == HEADER_OFFSET:
            return int(value)
    return None
