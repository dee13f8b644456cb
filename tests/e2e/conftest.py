"""Every end-to-end test: no worker it started wrote a secret it was given to its log (the values of the
settings marked secret, and a password in REDIS_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pipeline_harness
import pytest

from settings import SETTINGS_DOC

MIN_SECRET_CHARS = 8  # shorter values (a test's "pw") would match by chance


def secrets_of(env: dict[str, str]) -> dict[str, str]:
    """Setting name -> secret value, of the secret settings `env` sets."""
    found = {s.name: env[s.name] for s in SETTINGS_DOC if s.secret and s.name != "REDIS_URL" and env.get(s.name)}
    password = urlsplit(env.get("REDIS_URL", "")).password
    if password:
        found["REDIS_URL's password"] = password
    return {name: value for name, value in found.items() if len(value) >= MIN_SECRET_CHARS}


@pytest.fixture(autouse=True)
def no_secret_in_worker_logs() -> Iterator[None]:
    first = len(pipeline_harness.STARTED)
    yield
    for worker in pipeline_harness.STARTED[first:]:
        if not worker.log_path.exists():
            continue
        log = worker.log_path.read_text(errors="replace")
        for name, value in secrets_of(worker.env).items():
            assert value not in log, f"{name} appears in {worker.log_path}"
