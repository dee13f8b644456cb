"""Epoch-aligned, half-open [start, end) event-time window definitions."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "DEFAULT_WINDOWS",
    "RESERVED_NAMES",
    "WindowSpec",
    "closed_upto_ms",
    "first_open_start",
    "is_closed",
    "parse_duration_ms",
    "parse_windows",
    "window_sizes",
    "window_starts",
    "windows_at",
]

DEFAULT_WINDOWS = "tumbling_1m:60s,hopping_1m:60s:30s"
# The batch layer's rollup datasets live beside the windows' under aggregated/ (sinks/lake.py).
RESERVED_NAMES = frozenset({"hourly", "daily"})

# Window names end up in S3 paths and Redis keys verbatim, so they are
# restricted to a charset that needs no escaping anywhere.
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
# ASCII digits only: str.isdigit()/\d would also accept e.g. Arabic-Indic digits.
_DURATION_RE = re.compile(r"([0-9]{1,15})(ms|s|m|h)?", re.ASCII)
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000}


def _is_int(value: object) -> bool:
    # bool is an int subclass; True as a window size is a bug, not 1 ms.
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """A window family: windows of ``size_ms`` starting every ``step_ms``.

    Starts are multiples of ``step_ms`` counted from the Unix epoch, so every
    worker derives identical window boundaries without coordination.
    """

    name: str
    size_ms: int
    step_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or _NAME_RE.fullmatch(self.name) is None:
            raise ValueError(
                f"invalid window name {self.name!r}: expected 1-63 characters of [a-z0-9_-] starting with [a-z0-9]"
            )
        self._check_size()

    def _check_size(self) -> None:
        if not _is_int(self.size_ms) or self.size_ms <= 0:
            raise ValueError(f"window {self.name!r}: size_ms must be a positive int, got {self.size_ms!r}")
        if not _is_int(self.step_ms) or not 0 < self.step_ms <= self.size_ms:
            raise ValueError(
                f"window {self.name!r}: step_ms must be an int in (0, size_ms={self.size_ms}], got {self.step_ms!r}"
            )
        if self.size_ms % self.step_ms != 0:
            # Otherwise events would fall into a varying number of windows.
            raise ValueError(
                f"window {self.name!r}: size_ms={self.size_ms} is not a multiple of step_ms={self.step_ms}"
            )


def parse_duration_ms(text: str) -> int:
    """Parse ``"500ms"``, ``"60s"``, ``"1m"``, ``"2h"`` or bare seconds ``"60"``.

    Only non-negative integers are accepted (``"0"`` is valid: e.g. zero
    lateness); surrounding whitespace is ignored.
    """
    stripped = text.strip()
    if not stripped:
        raise ValueError("invalid duration: empty string")
    if stripped.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    match = _DURATION_RE.fullmatch(stripped)
    if match is None:
        raise ValueError(
            f"invalid duration {text!r}: expected an integer of at most 15 digits "
            "with optional unit ms, s, m or h (bare integer = seconds)"
        )
    amount, unit = match.groups()
    return int(amount) * _UNIT_MS[unit or "s"]


def _parse_window_item(item: str) -> WindowSpec:
    parts = [part.strip() for part in item.split(":")]
    if len(parts) not in (2, 3):
        raise ValueError("expected name:size or name:size:step")
    size_ms = parse_duration_ms(parts[1])
    step_ms = parse_duration_ms(parts[2]) if len(parts) == 3 else size_ms
    return WindowSpec(name=parts[0], size_ms=size_ms, step_ms=step_ms)


def parse_windows(text: str) -> tuple[WindowSpec, ...]:
    """Parse ``"name:size[:step],..."``; step defaults to size (tumbling)."""
    if not text.strip():
        raise ValueError("no windows configured: empty window list")
    specs: list[WindowSpec] = []
    seen: set[str] = set()
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            raise ValueError(f"invalid window list {text!r}: empty item")
        try:
            spec = _parse_window_item(item)
        except ValueError as exc:
            raise ValueError(f"invalid window {item!r}: {exc}") from exc
        if spec.name in RESERVED_NAMES:
            raise ValueError(f"invalid window {item!r}: {spec.name!r} is reserved for the batch layer's rollups")
        if spec.name in seen:
            # Names key the tables and export paths; duplicates would merge data.
            raise ValueError(f"invalid window {item!r}: duplicate name {spec.name!r}")
        seen.add(spec.name)
        specs.append(spec)
    return tuple(specs)


def window_starts(spec: WindowSpec, event_ms: int) -> tuple[int, ...]:
    """Starts ``s`` (ascending) of all windows with ``s <= event_ms < s + size_ms``."""
    # Floor division keeps alignment correct for pre-epoch (negative) times.
    last_start = (event_ms // spec.step_ms) * spec.step_ms
    count = spec.size_ms // spec.step_ms
    first_start = last_start - (count - 1) * spec.step_ms
    return tuple(range(first_start, last_start + 1, spec.step_ms))


# -- the close rule ----------------------------------------------------------------------------
# A window [start, end) is closed once the frontier (tables/watermark.py) has reached its end: no
# event still accepted can fall in it. is_closed is the rule; closed_upto_ms is its form for a loop
# over many windows of one size (the latest closed start, computed once), and first_open_start the
# first start of a window family past it. tests/unit/test_rules.py checks that they agree.


def is_closed(start_ms: int, size_ms: int, frontier_ms: int | None) -> bool:
    """The close rule: True once the frontier has reached the window's end."""
    return frontier_ms is not None and start_ms + size_ms <= frontier_ms


def closed_upto_ms(size_ms: int, frontier_ms: int) -> int:
    """The latest start of a closed window of this size: every window starting at or before it is closed."""
    return frontier_ms - size_ms


def first_open_start(spec: WindowSpec, frontier_ms: int) -> int:
    """The first start of `spec` whose window is not closed at `frontier_ms`."""
    return closed_upto_ms(spec.size_ms, frontier_ms) // spec.step_ms * spec.step_ms + spec.step_ms


def windows_at(windows: Sequence[WindowSpec], event_ms: int,
               frontier_ms: int | None) -> tuple[list[tuple[str, int]], tuple[tuple[str, int], ...]]:
    """The windows (name, start) an event time falls in, split by the close rule: (open, closed), each in
    the order of `windows` and then of window_starts. The fold asks once per slot of event time and batch
    (tables/partials.fold_records), not per record."""
    opened: list[tuple[str, int]] = []
    closed: list[tuple[str, int]] = []
    for spec in windows:
        for start_ms in window_starts(spec, event_ms):
            (closed if is_closed(start_ms, spec.size_ms, frontier_ms) else opened).append((spec.name, start_ms))
    return opened, tuple(closed)


def window_sizes(windows: tuple[WindowSpec, ...]) -> dict[str, int]:
    """Size of each configured window by name. Both stages drop the state of a window that is not
    (or no longer) in WINDOWS, with a warning: its size, hence its end, is unknown."""
    return {spec.name: spec.size_ms for spec in windows}
