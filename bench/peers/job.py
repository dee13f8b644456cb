"""The peers' job and their report format, shared by the peer apps (each in its own venv) and the harness.

Standard library only: the peer apps import it from their venvs, where none of this project's
packages are installed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final, NamedTuple

# The job: per event_type, count, sum, min, max and mean of `value` in each window.
TUMBLING: Final = "tumbling_60s"
HOPPING: Final = "hopping_60s_30s"
SIZE_MS: Final = 60_000
HOP_MS: Final = 30_000
WINDOW_STEPS_MS: Final = {TUMBLING: SIZE_MS, HOPPING: HOP_MS}  # every window is SIZE_MS long

# The preload ends every partition with a sentinel event (bench.__main__.preload), an hour of event time later.
SENTINEL_TYPE: Final = "sentinel"


class WindowRow(NamedTuple):
    """One closed window of one event type, as a peer reports it."""

    window: str
    start_ms: int
    event_type: str
    count: int
    sum: float
    min: float
    max: float
    mean: float


def write_report(path: Path, *, first_s: float, done_s: float, rows: list[WindowRow], late: int,
                 note: str = "") -> None:
    """A peer's answer: its timing (time.monotonic, seconds), its closed windows and the late records it saw."""
    report = {"first_s": first_s, "done_s": done_s, "late": late, "note": note, "rows": [list(row) for row in rows]}
    path.write_text(json.dumps(report))


def read_report(path: Path) -> dict[str, Any]:
    report = json.loads(path.read_text())
    report["rows"] = [WindowRow(*row) for row in report["rows"]]
    return report
