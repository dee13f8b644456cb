"""ops/process.supervise: a crashed process is started again; one that exits with status 2 at its first start,
a configuration error, is not (it would fail the same way for ever), and supervise returns that status; at a
later start status 2 is a store that did not answer in time, and the process is started again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import ops.process
from ops.process import CONFIGURATION_EXIT_STATUS, ManagedProcess, supervise


def _process(name: str, tmp_path: Path, code: str) -> ManagedProcess:
    # Each start appends a line to its own file: the file counts the starts.
    starts = tmp_path / f"{name}.starts"
    return ManagedProcess(name, [sys.executable, "-c", f"open({str(starts)!r}, 'a').write('x\\n'); {code}"],
                          log_path=tmp_path / f"{name}.log")


def _starts(tmp_path: Path, name: str) -> int:
    path = tmp_path / f"{name}.starts"
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_a_crash_is_restarted_and_a_configuration_error_ends_supervision(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ops.process, "RESTART_DELAYS_S", (0.0,))
    crashing = _process("crashing", tmp_path, "raise SystemExit(70)")
    misconfigured = _process("misconfigured", tmp_path, "import time; time.sleep(1.5); raise SystemExit(2)")
    started = time.monotonic()
    for child in (crashing, misconfigured):
        child.start()
    assert supervise([crashing, misconfigured], restart={"crashing", "misconfigured"}) == CONFIGURATION_EXIT_STATUS
    assert time.monotonic() - started < 30
    assert _starts(tmp_path, "misconfigured") == 1  # not started again
    assert _starts(tmp_path, "crashing") >= 2  # restarted meanwhile
    crashing.stop(grace_s=5)


def test_status_2_after_a_restart_is_restarted_like_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Crashes once (70), then exits 2 at every later start (a store down when it restarts): still supervised."""
    monkeypatch.setattr(ops.process, "RESTART_DELAYS_S", (0.0,))
    starts = tmp_path / "flaky.starts"
    flaky = _process("flaky", tmp_path, f"raise SystemExit(70 if len(open({str(starts)!r}).readlines()) == 1 else 2)")
    sentinel = _process("sentinel", tmp_path, "import time; time.sleep(3); raise SystemExit(2)")
    for child in (flaky, sentinel):
        child.start()
    assert supervise([flaky, sentinel], restart={"flaky", "sentinel"}) == CONFIGURATION_EXIT_STATUS
    assert _starts(tmp_path, "flaky") >= 3  # 70, then 2 and 2...: restarted each time
    assert _starts(tmp_path, "sentinel") == 1  # what ended supervision: its first start's status 2
