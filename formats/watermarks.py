"""The watermarks topic (`{app_id}-watermarks`, compacted, keyed by input partition): each input
partition's watermark as its owner publishes it (MARK_VERSION 1).

``{"v": 1, "w": watermark_ms or null, "idle": bool, "at": published_at_ms}``; before the version
field was written the same body came without ``"v"``, and older still without ``"idle"`` (false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import orjson

__all__ = ["MARK_VERSION", "Mark", "decode_mark", "encode_mark"]

MARK_VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Mark:
    """What a partition's owner publishes: its watermark, or None before its first event."""

    watermark_ms: int | None
    idle: bool = False  # no event yet, and none for the idle timeout: leave it out of the minimum


def encode_mark(mark: Mark, published_at_ms: int) -> bytes:
    return orjson.dumps({"v": MARK_VERSION, "w": mark.watermark_ms, "idle": mark.idle, "at": published_at_ms})


def decode_mark(raw: bytes) -> Mark:
    """A mark of any version this one knows; ValueError for a newer one."""
    body = orjson.loads(raw)
    if body.get("v", MARK_VERSION) != MARK_VERSION:
        raise ValueError(f"a watermark of unknown version {body['v']!r}")
    watermark = body["w"]
    return Mark(None if watermark is None else int(watermark), bool(body.get("idle", False)))
