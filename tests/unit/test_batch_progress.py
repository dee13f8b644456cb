"""The batch run's progress (batch/progress.py): the bar and the log line rendered from numbers, time
passed as data, and the reporter's terminal and non-terminal behaviour with a fake clock."""

from __future__ import annotations

import pytest

from batch.progress import QUIET_FOR_S, ProgressReporter, eta_s, format_duration, progress_line, render_bar


@pytest.mark.parametrize(("seconds", "text"), [(0, "0:00"), (59.9, "0:59"), (61, "1:01"), (3_600, "1:00:00"),
                                               (3_723, "1:02:03"), (-5, "0:00")])
def test_durations(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_eta_is_the_mean_pace_so_far() -> None:
    assert eta_s(0, 48, 10.0) is None
    assert eta_s(12, 48, 42.0) == 126.0
    assert eta_s(48, 48, 300.0) == 0.0


def test_the_bar() -> None:
    assert render_bar(12, 48, 42.0, width=20) == (
        "batch [#####---------------] 12/48 steps  25%  elapsed 0:42  ETA 2:06")
    assert render_bar(0, 48, 0.0, width=20) == (
        "batch [--------------------]  0/48 steps   0%  elapsed 0:00  ETA ?")
    assert render_bar(48, 48, 3_725.0, width=20) == (
        "batch [####################] 48/48 steps 100%  elapsed 1:02:05  ETA 0:00")
    assert render_bar(0, 0, 1.0, width=4) == "batch [####] 0/0 steps 100%  elapsed 0:01  ETA ?"


def test_the_log_line() -> None:
    assert progress_line(12, 48, 42.0) == "progress: 12/48 steps (25%), elapsed 0:42, ETA 2:06"


class Clock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def test_a_terminal_gets_one_line_redrawn_in_place_and_the_jobs_lines_around_it() -> None:
    clock, drawn, said = Clock(), [], []
    reporter = ProgressReporter(tty=True, draw=drawn.append, say=said.append, clock=clock)
    clock.now_s += 1.0
    reporter(1, 4)
    clock.now_s += 0.05  # too soon after the last redraw: skipped
    reporter(2, 4)
    reporter.line("hour 2026-11-01T22Z: 3 rows")
    clock.now_s += 1.0
    reporter(4, 4)  # the last step is always drawn
    reporter.finish()
    bar1 = render_bar(1, 4, 1.0)
    assert drawn == ["\r\x1b[K" + bar1, "\r\x1b[K", bar1, "\r\x1b[K" + render_bar(4, 4, 2.05), "\n"]
    assert said == ["hour 2026-11-01T22Z: 3 rows"]


def test_elsewhere_a_line_per_tenth_once_the_run_has_lasted_a_while() -> None:
    clock, said = Clock(), []
    reporter = ProgressReporter(tty=False, draw=lambda text: pytest.fail(f"drew {text!r}"), say=said.append,
                                clock=clock)
    for done in range(1, 51):
        clock.now_s += 0.5
        reporter(done, 50)
    reporter.finish()
    # Quiet for the first QUIET_FOR_S (10 s: 20 steps), then the tenth reached, then each further tenth.
    assert QUIET_FOR_S == 10.0
    assert said == [progress_line(done, 50, done * 0.5) for done in (20, 25, 30, 35, 40, 45, 50)]

    quick: list[str] = []
    reporter = ProgressReporter(tty=False, draw=lambda text: None, say=quick.append, clock=clock)
    for done in range(1, 501):
        clock.now_s += 0.01  # 500 up-to-date periods in 5 s
        reporter(done, 500)
    reporter.line("a job line")
    assert quick == ["a job line"]
