"""The alerts of a rules file over an event set, computed in plain Python from docs/alert-rules.md (not with
the pipeline's engine, alerts/engine.py), and what Redis and /v1/alerts must then hold. Shared by the alert
and dashboard end-to-end tests."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import groundtruth as gt
import orjson

from formats.keys import encode_key_part

LATENESS_MS = gt.LATENESS_MS
WINDOWS = {"tumbling_1m": (60_000, 60_000), "hopping_1m": (60_000, 30_000)}  # the default WINDOWS


def rules_toml(rules: list[dict[str, Any]]) -> str:
    """`rules` as the TOML file the worker reads (ALERT_RULES)."""
    out = []
    for rule in rules:
        out.append("[[rule]]")
        for key, value in rule.items():
            if key == "labels":
                value = "{ " + ", ".join(f"{k} = {orjson.dumps(v).decode()}" for k, v in value.items()) + " }"
                out.append(f"labels = {value}")
            else:
                out.append(f"{key} = {orjson.dumps(value).decode()}")
        out.append("")
    return "\n".join(out)



@dataclass(frozen=True, slots=True)
class Ev:
    partition: int
    event_type: str
    event_ms: int
    value: float


def records(events: list[Ev]) -> list[gt.Produced]:
    return [gt.Produced(e.partition, b"u", gt.encode("u", e.event_type, e.event_ms, e.value)) for e in events]


# -- the reference: plain Python, written from docs/alert-rules.md, not from alerts/engine.py -----


def window_rows(events: list[Ev]) -> dict[tuple[str, int], dict[str, list[float]]]:
    """(window, start) -> event type -> the values in it."""
    rows: dict[tuple[str, int], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for e in events:
        for window, (size, step) in WINDOWS.items():
            start = e.event_ms - e.event_ms % step
            while start > e.event_ms - size:
                rows[(window, start)][e.event_type].append(e.value)
                start -= step
    return rows


def measure(values: list[float] | None, name: str) -> float | None:
    if not values:
        return {"count": 0.0, "sum": 0.0}.get(name)
    return {"count": float(len(values)), "sum": sum(values), "min": min(values), "max": max(values),
            "mean": sum(values) / len(values)}[name]


OPS = {">": lambda a, b: a > b, ">=": lambda a, b: a >= b, "<": lambda a, b: a < b, "<=": lambda a, b: a <= b}


@dataclass
class RefTrack:
    breach: int = 0
    normal: int = 0
    firing: bool = False
    past: list[float] = field(default_factory=list)
    idle: int = 0


def reference(rules: list[dict[str, Any]], events: list[Ev], first_low_ms: int,
              last_low_ms: int) -> list[dict[str, Any]]:
    """Every alert of `rules` over the windows closing after `first_low_ms` up to `last_low_ms`, in the order
    the windows are judged: by window end, then window name, rule order and event type."""
    rows = window_rows(events)
    judged = []
    for window, (size, step) in WINDOWS.items():
        start = first_low_ms - first_low_ms % step
        while start + size <= first_low_ms:
            start += step
        while start + size <= last_low_ms:
            judged.append((start + size, window, start))
            start += step
    tracks: dict[tuple[str, str], RefTrack] = {}
    alerts = []
    for end, window, start in sorted(judged):
        here = rows.get((window, start), {})
        for rule in (r for r in rules if r["window"] == window):
            name = rule["name"]
            listed = rule.get("event_types", [])
            types = listed or set(here) | {t for (r, t) in tracks if r == name}
            for event_type in sorted(types):
                track = tracks.setdefault((name, event_type), RefTrack())
                values = here.get(event_type)
                value = judged_value(rule, track, values)
                track.idle = 0 if values else min(track.idle + 1, 10)
                state = None
                if value is not None:
                    breach = not values if rule["kind"] == "absence" else OPS[rule["op"]](value, rule["threshold"])
                    if breach:
                        track.normal, track.breach = 0, min(track.breach + 1, rule.get("for", 1))
                        if not track.firing and track.breach >= rule.get("for", 1):
                            track.firing, state = True, "firing"
                    else:
                        track.breach = 0
                        if track.firing:
                            track.normal += 1
                            if track.normal >= rule.get("resolve_for", 1):
                                track.firing, track.normal, state = False, 0, "resolved"
                if not listed and track.idle >= 10 and not track.firing:
                    del tracks[(name, event_type)]
                if state is not None:
                    assert value is not None
                    alerts.append(alert_json(rule, event_type, window, start, end, state, value))
    return alerts


def judged_value(rule: dict[str, Any], track: RefTrack, values: list[float] | None) -> float | None:
    current = measure(values, rule.get("measure", "count"))
    kind = rule["kind"]
    if kind in ("threshold", "absence"):
        return current
    if kind == "change":
        previous = track.past[0] if track.past else None
        track.past = [] if current is None else [current]
        return current / previous if current is not None and previous else None
    n = rule["trailing"]
    value = None
    if current is not None and len(track.past) == n:
        mean = sum(track.past) / n
        sd = math.sqrt(sum((x - mean) ** 2 for x in track.past) / n)
        value = (current - mean) / sd if sd > 0 else None
    if current is not None:
        track.past = [*track.past, current][-n:]
    return value


def alert_json(rule: dict[str, Any], event_type: str, window: str, start: int, end: int, state: str,
               value: float) -> dict[str, Any]:
    return {"id": f"{rule['name']}:{quote_type(event_type)}:{start}:{state}", "rule": rule["name"],
            "kind": rule["kind"], "severity": rule.get("severity", "warning"), "state": state,
            "event_type": event_type, "window": window, "window_start_ms": start, "window_end_ms": end,
            "window_start": gt_iso(start), "window_end": gt_iso(end), "value": value,
            "threshold": float(rule.get("threshold", 1)), "labels": rule.get("labels", {})}


def quote_type(event_type: str) -> str:
    return encode_key_part(event_type)  # the README's enc(): percent-encoding, a leading . or _ escaped


def gt_iso(epoch_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_ms // 1000))


def frontier_of(events: list[Ev]) -> int:
    return min(max(e.event_ms for e in events if e.partition == p) for p in range(gt.PARTITIONS)) - LATENESS_MS


def active_of(expected: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    active: dict[str, dict[str, Any]] = {}
    for alert in expected:
        key = f"{alert['rule']}:{quote_type(alert['event_type'])}"
        if alert["state"] == "firing":
            active[key] = alert
        else:
            active.pop(key, None)
    return active


def recent_of(expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest window first; equal ends in reverse order of their JSON (Redis' ZREVRANGE)."""
    encoded = [orjson.dumps(a, option=orjson.OPT_SORT_KEYS) for a in expected]
    return [orjson.loads(b) for b in sorted(encoded, key=lambda b: (orjson.loads(b)["window_end_ms"], b),
                                            reverse=True)]


def web_active_of(expected: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`active` of /v1/alerts: newest window first, then rule and event type."""
    return sorted(active_of(expected).values(), key=lambda a: (-a["window_start_ms"], a["rule"], a["event_type"]))
