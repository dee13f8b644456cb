"""The Procfile's worker line, run by a shell as platforms run it (with `faust` a stand-in that prints
what it was given): it exposes the API only with a token and an advertised WEB_HOST, and without either
stops in one line naming it, status 2, before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from settings import load

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "s3cr3t-token-of-32-characters!!!"
FAKE_FAUST = """#!/bin/sh
printf '%s\\n' "WEB_BIND=$WEB_BIND" "WEB_PORT=$WEB_PORT" "WEB_HOST=$WEB_HOST" "WEB_AUTH_TOKEN=$WEB_AUTH_TOKEN" "$*"
"""


def worker_line() -> str:
    lines = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    return lines["worker"]


def run(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "faust").write_text(FAKE_FAUST)
    (tmp_path / "faust").chmod(0o755)
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["sh", "-c", worker_line()], env={"PATH": path, "PORT": "5000", **env},
                          capture_output=True, text=True, timeout=30, check=False)


def test_the_worker_is_exposed_with_its_token_and_its_address(tmp_path: Path) -> None:
    done = run(tmp_path, {"WEB_HOST": "10.0.0.7", "WEB_AUTH_TOKEN": TOKEN})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == ["WEB_BIND=0.0.0.0", "WEB_PORT=5000", "WEB_HOST=10.0.0.7", f"WEB_AUTH_TOKEN={TOKEN}",
                     "-A app worker -l info"]
    settings = load(dict(line.split("=", 1) for line in lines[:4]))  # and the settings take them
    assert (settings.web.bind, settings.web.host, settings.web.auth_token) == ("0.0.0.0", "10.0.0.7", TOKEN)


@pytest.mark.parametrize(("missing", "given"), [("WEB_HOST", {"WEB_AUTH_TOKEN": TOKEN}),
                                                ("WEB_AUTH_TOKEN", {"WEB_HOST": "10.0.0.7"})])
def test_without_a_token_or_an_address_it_stops_in_one_line(tmp_path: Path, missing: str,
                                                               given: dict[str, str]) -> None:
    done = run(tmp_path, given)
    assert (done.returncode, done.stdout) == (2, "")
    assert len(done.stderr.strip().splitlines()) == 1 and f"set {missing} to" in done.stderr
    assert TOKEN not in done.stderr
