"""Progress of a long batch run (a backfill over many hours), kept out of the job: run_batch calls
a Progress callback after each step (batch/job.py says what a step is), and this renders it.

On a terminal, one line on stderr redrawn in place (steps done of all, elapsed time, ETA); the
job's own lines (stdout) clear it first and it is drawn again after them. Elsewhere (a log file,
the Procfile's `batch:` process) it is a line through the job's `say` each time another tenth
of the steps is done, once the run has lasted QUIET_FOR_S: a scheduled run over a lake that is
up to date considers every period and finishes in seconds, and should not log ten lines. Time
comes from an injected clock; the rendering functions take it as data.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

__all__ = ["QUIET_FOR_S", "ProgressReporter", "eta_s", "format_duration", "progress_line", "render_bar"]

BAR_WIDTH: Final = 30
QUIET_FOR_S: Final = 10.0
REDRAW_EVERY_S: Final = 0.2  # a terminal redraw at most this often (the last step is always drawn)
_CLEAR_LINE: Final = "\r\x1b[K"


def format_duration(seconds: float) -> str:
    """M:SS, or H:MM:SS from an hour on."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def eta_s(done: int, total: int, elapsed_s: float) -> float | None:
    """Time left at the mean pace so far; None before the first step."""
    if done <= 0 or total <= 0:
        return None
    return elapsed_s / done * max(0, total - done)


def _percent(done: int, total: int) -> int:
    return 100 if total <= 0 else math.floor(100 * min(done, total) / total)


def render_bar(done: int, total: int, elapsed_s: float, width: int = BAR_WIDTH) -> str:
    """`batch [#########---------------------]  12/48 steps  25%  elapsed 0:42  ETA 2:06`"""
    filled = width if total <= 0 else width * min(done, total) // total
    eta = eta_s(done, total, elapsed_s)
    return (f"batch [{'#' * filled}{'-' * (width - filled)}] {done:>{len(str(total))}}/{total} steps "
            f"{_percent(done, total):>3}%  elapsed {format_duration(elapsed_s)}  "
            f"ETA {'?' if eta is None else format_duration(eta)}")


def progress_line(done: int, total: int, elapsed_s: float) -> str:
    """The same, as a log line: `progress: 12/48 steps (25%), elapsed 0:42, ETA 2:06`."""
    eta = eta_s(done, total, elapsed_s)
    return (f"progress: {done}/{total} steps ({_percent(done, total)}%), elapsed {format_duration(elapsed_s)}, "
            f"ETA {'?' if eta is None else format_duration(eta)}")


class ProgressReporter:
    """The Progress callback of one run, and the `say` to give the job in its place (`line`)."""

    def __init__(self, *, tty: bool, draw: Callable[[str], None], say: Callable[[str], None],
                 clock: Callable[[], float]) -> None:
        self._tty = tty
        self._draw = draw  # writes to the terminal as is (no newline added)
        self._say = say
        self._clock = clock
        self._started_s = clock()
        self._bar: str | None = None  # what the terminal shows now
        self._drawn_at_s: float | None = None
        self._logged_tenths = 0

    def __call__(self, done: int, total: int) -> None:
        now_s = self._clock()
        elapsed_s = now_s - self._started_s
        if self._tty:
            last = done >= total
            if last or self._drawn_at_s is None or now_s - self._drawn_at_s >= REDRAW_EVERY_S:
                self._bar = render_bar(done, total, elapsed_s)
                self._draw(_CLEAR_LINE + self._bar)
                self._drawn_at_s = now_s
            return
        tenths = 10 * min(done, total) // total if total else 10
        if elapsed_s >= QUIET_FOR_S and tenths > self._logged_tenths:
            self._logged_tenths = tenths
            self._say(progress_line(done, total, elapsed_s))

    def line(self, text: str) -> None:
        """One of the job's lines: on a terminal the bar is cleared before it and drawn again after."""
        if self._bar is not None:
            self._draw(_CLEAR_LINE)
        self._say(text)
        if self._bar is not None:
            self._draw(self._bar)

    def finish(self) -> None:
        """End the bar's line, so the next output starts on a line of its own."""
        if self._bar is not None:
            self._draw("\n")
            self._bar = None
