"""Alerts: the alert record and its JSON, the same bytes in the alerts topic, in Redis and in the web
API (ALERT_FORMAT 1); and the rule state that the export changelog stores per (rule, event type).

An alert's JSON is canonical (sorted keys): the same alert always gives the same bytes, so a Redis
member written again by a replay is the same member. That is also why it carries no version field:
one added would make every alert written before an upgrade a different member than its replay after
it. A change of meaning would be a new key (and ALERT_FORMAT 2).

In the alerts topic, each record is in the partition of the stage-2 partition that judged it, keyed
by its id, with its sequence number there in the ``alert.seq`` header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, NamedTuple

import orjson

from formats.events import iso_utc

__all__ = ["ALERT_FORMAT", "HEADER_ALERT_SEQ", "Alert", "Track", "alert_headers", "alert_seq", "alert_to_api",
           "decode_alert", "encode_alert"]

ALERT_FORMAT: Final = 1
HEADER_ALERT_SEQ: Final = "alert.seq"  # an alert's position among its stage-2 partition's alerts


class Alert(NamedTuple):
    id: str
    rule: str
    kind: str
    severity: str
    state: str  # firing or resolved
    event_type: str
    window: str
    window_start_ms: int
    window_end_ms: int
    value: float
    threshold: float
    labels: tuple[tuple[str, str], ...]


@dataclass(slots=True)
class Track:
    """One rule's state for one event type across windows (alerts/engine.py says how it is judged)."""

    breaching: int = 0  # consecutive breaching windows, capped at the rule's `for`
    normal: int = 0  # consecutive normal windows while firing, capped at `resolve_for`
    firing: bool = False
    history: list[float] = field(default_factory=list)
    idle: int = 0  # consecutive windows without a row, capped at FORGET_AFTER


def alert_to_api(alert: Alert) -> dict[str, object]:
    return {"id": alert.id, "rule": alert.rule, "kind": alert.kind, "severity": alert.severity,
            "state": alert.state, "event_type": alert.event_type, "window": alert.window,
            "window_start_ms": alert.window_start_ms, "window_end_ms": alert.window_end_ms,
            "window_start": iso_utc(alert.window_start_ms), "window_end": iso_utc(alert.window_end_ms),
            "value": alert.value, "threshold": alert.threshold, "labels": dict(alert.labels)}


def encode_alert(alert: Alert) -> bytes:
    """Canonical JSON (sorted keys): see the module doc."""
    return orjson.dumps(alert_to_api(alert), option=orjson.OPT_SORT_KEYS)


def decode_alert(raw: bytes) -> Alert:
    body = orjson.loads(raw)
    return Alert(str(body["id"]), str(body["rule"]), str(body["kind"]), str(body["severity"]), str(body["state"]),
                 str(body["event_type"]), str(body["window"]), int(body["window_start_ms"]),
                 int(body["window_end_ms"]), float(body["value"]), float(body["threshold"]),
                 tuple(sorted((str(k), str(v)) for k, v in body["labels"].items())))


def alert_headers(seq: int) -> list[tuple[str, bytes]]:
    return [(HEADER_ALERT_SEQ, str(seq).encode())]


def alert_seq(headers: list[tuple[str, bytes]]) -> int | None:
    """The sequence number of an alerts-topic record, or None if absent."""
    for name, value in headers:
        if name == HEADER_ALERT_SEQ:
            return int(value)
    return None
