"""A child process the stack owns: started in its own session, logged to a file, ready-checked
with a deadline, stopped with a grace period then SIGKILL, and killed by the kernel if we die."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


class ServiceFailedError(RuntimeError):
    """A service exited or did not become ready in time."""


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: the kernel sends SIGKILL when the parent
    # dies, even by SIGKILL, so a crashed supervisor leaves no orphan servers behind.
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ManagedProcess:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    def start(self) -> None:
        # No log file: the child shares our terminal (the worker's logs during `make run`).
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") if self.log_path else open(os.devnull, "rb") as log_file:
            output = log_file if self.log_path else None
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT if self.log_path else None,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,  # our own signal handling decides the stop order
                preexec_fn=_die_with_parent,
            )
        log.debug("started %s (pid %s): %s", self.name, self._popen.pid, " ".join(self.argv))

    def exit_code(self) -> int | None:
        return self._popen.poll() if self._popen else None

    def wait_ready(self, check: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.1) -> None:
        """Poll `check` until it returns True; fail fast if the process exits meanwhile."""
        deadline = time.monotonic() + timeout_s
        while True:
            code = self.exit_code()
            if code is not None:
                raise ServiceFailedError(f"{self.name} exited with status {code} while starting; {self._log_hint()}")
            try:
                if check():
                    return
            except Exception as exc:  # noqa: BLE001 - not ready yet, whatever the client raised
                log.debug("%s not ready: %s", self.name, exc)
            if time.monotonic() >= deadline:
                raise ServiceFailedError(f"{self.name} not ready within {timeout_s:.0f}s; {self._log_hint()}")
            time.sleep(interval_s)

    def stop(self, *, grace_s: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """Signal the process group, wait up to grace_s, then SIGKILL it."""
        popen = self._popen
        if popen is None:
            return
        if popen.poll() is None:
            self._signal_group(sig)
            try:
                popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0fs; killing it", self.name, grace_s)
        # Kill whatever is left in the group, the leader included, and reap it.
        self._signal_group(signal.SIGKILL)
        popen.wait()

    def _signal_group(self, sig: int) -> None:
        assert self._popen is not None
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def _log_hint(self) -> str:
        if self.log_path is None:
            return "see its output above"
        try:
            tail = self.log_path.read_text(errors="replace").strip().splitlines()[-5:]
        except OSError:
            tail = []
        last = " | ".join(line.strip() for line in tail) or "no output"
        return f"see {self.log_path} (last lines: {last})"


RESTART_DELAYS_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a process up this long that exits again restarts after the first delay


CONFIGURATION_EXIT_STATUS = 2  # a setting to fix (one line on stderr): restarting would fail the same way


def supervise(children: list[ManagedProcess], restart: set[str]) -> int:
    """Block until interrupted, restarting the processes named in `restart` whenever they exit, or until one
    of them exits with CONFIGURATION_EXIT_STATUS at its first start: that status is returned, and the caller
    stops the rest. At a later start the same status is a store or broker not answering in time (the
    settings worked before), and the process is restarted like a crashed one.

    The worker is crash-only: after an unexpected error it stops, and its state in Kafka makes the
    restart exact; it is started again after 1, 2, 5, 10, then 30 s, and after 1 s again once it
    has run for a minute. (`make run` and `python -m commands.workers` supervise this way; a platform
    that runs the Procfile does the same.)
    """
    started = {child.name: time.monotonic() for child in children}
    failures = dict.fromkeys(restart, 0)
    restarted: set[str] = set()
    while True:
        for child in children:
            code = child.exit_code()
            if code is None or child.name not in restart:
                continue
            if code == CONFIGURATION_EXIT_STATUS and child.name not in restarted:
                log.error("%s exited with status %d, a configuration error (its line above): not restarted",
                          child.name, code)
                return code
            if time.monotonic() - started[child.name] >= STABLE_AFTER_S:
                failures[child.name] = 0
            delay = RESTART_DELAYS_S[min(failures[child.name], len(RESTART_DELAYS_S) - 1)]
            failures[child.name] += 1
            log.error("%s exited with status %s; restarting it in %.0fs", child.name, code, delay)
            time.sleep(delay)
            child.start()
            started[child.name] = time.monotonic()
            restarted.add(child.name)
        time.sleep(0.2)
