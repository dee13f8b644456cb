"""Shared fixtures: the embedded stack, started once per session on free ports."""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from devstack.ports import free_port_block
from devstack.stack import ISOLATED_PORT_COUNT, Endpoints, Stack, isolated_settings, without_service_urls
from settings import SETTINGS_DOC, load_devstack

MIN_SECRET_CHARS = 8  # shorter values (a test's "pw") would match by chance


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark by folder: `integration` (the embedded servers), `e2e` (worker processes, chaos included).
    `make test-fast` runs the rest, the unit tests, in seconds."""
    for item in items:
        parts = item.path.parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts or "chaos" in parts:
            item.add_marker(pytest.mark.e2e)


def _stack(tmp_path_factory: pytest.TempPathFactory, broker: str | None) -> Iterator[Endpoints]:
    # No test may depend on a service that happens to run on the machine.
    env = without_service_urls(os.environ)
    if broker is not None:
        env["DEVSTACK_BROKER"] = broker
    data_dir = tmp_path_factory.mktemp(f"devstack-{broker or 'default'}")
    # Memory storage: tests make their own topics and never restart this broker.
    config = load_devstack({**env, **isolated_settings(str(data_dir), free_port_block(ISOLATED_PORT_COUNT), "memory")})
    with Stack(config, buckets=[], env=env) as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """The embedded stack on the broker DEVSTACK_BROKER names: Apache Kafka unless it says tansu."""
    yield from _stack(tmp_path_factory, None)


@pytest.fixture(scope="session")
def tansu_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    """A second embedded stack on Tansu, for the tests of what Tansu still supports (docs/development.md, Brokers)."""
    yield from _stack(tmp_path_factory, "tansu")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: valid as a topic, a bucket, a group id and a key prefix."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{slug}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by playwright (the dashboard tests skip before this without it)."""
    from dashboard_page import CHROMIUM, sync_api  # tests/e2e: playwright is imported only where a test needs it

    assert CHROMIUM is not None
    with sync_api.sync_playwright() as playwright:
        # The distribution's Chromium, not a downloaded build: the machine is offline.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def secrets_of(env: dict[str, str]) -> dict[str, str]:
    """Setting name -> secret value, of the secret settings `env` sets (and REDIS_URL's password)."""
    found = {s.name: env[s.name] for s in SETTINGS_DOC if s.secret and s.name != "REDIS_URL" and env.get(s.name)}
    password = urlsplit(env.get("REDIS_URL", "")).password
    if password:
        found["REDIS_URL's password"] = password
    return {name: value for name, value in found.items() if len(value) >= MIN_SECRET_CHARS}


@pytest.fixture(autouse=True)
def no_secret_in_worker_logs() -> Iterator[None]:
    """After every test: no worker it started (tests/e2e/pipeline_harness.py, imported only by the tests
    that start workers) wrote a secret it was given to its log."""
    harness = sys.modules.get("pipeline_harness")
    first = len(harness.STARTED) if harness is not None else 0
    yield
    harness = sys.modules.get("pipeline_harness")
    if harness is None:
        return
    for worker in harness.STARTED[first:]:
        if not worker.log_path.exists():
            continue
        log = worker.log_path.read_text(errors="replace")
        for name, value in secrets_of(worker.env).items():
            assert value not in log, f"{name} appears in {worker.log_path}"
