"""Shared fixtures: the embedded stack, started once per session on free ports."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator

import pytest

from devstack.ports import free_port_block
from devstack.services import SEAWEEDFS_PORT_COUNT
from devstack.stack import Endpoints, Stack
from settings import load_devstack

# Service URLs from the caller's environment would make the stack reuse those services;
# tests must never depend on a service that happens to run on the machine.
SERVICE_URL_SETTINGS = ("BROKER_URL", "S3_ENDPOINT_URL", "REDIS_URL")


def clean_environ() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name not in SERVICE_URL_SETTINGS}


def stack_settings(data_dir: str, base_port: int, storage: str) -> dict[str, str]:
    """Devstack settings for a port block of 2 + SEAWEEDFS_PORT_COUNT ports starting at base_port."""
    return {
        "DEVSTACK_DIR": data_dir,
        "DEVSTACK_BROKER_PORT": str(base_port),
        "DEVSTACK_REDIS_PORT": str(base_port + 1),
        "DEVSTACK_S3_PORT": str(base_port + 2),
        "DEVSTACK_BROKER_STORAGE": storage,
    }


STACK_PORT_COUNT = 2 + SEAWEEDFS_PORT_COUNT


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    env = clean_environ()
    data_dir = tmp_path_factory.mktemp("devstack")
    # Memory storage: tests make their own topics and never restart this broker.
    config = load_devstack({**env, **stack_settings(str(data_dir), free_port_block(STACK_PORT_COUNT), "memory")})
    with Stack(config, buckets=[], env=env) as endpoints:
        yield endpoints


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test uses: valid as a topic, a bucket, a group id and a key prefix."""
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"t-{slug}-{uuid.uuid4().hex[:8]}"
