"""What a process meets at start: a broker that does not answer, and stores that refuse it or do not answer,
end in one StoreAccessError or BrokerAccessError naming the setting, within the wait (STARTUP_TIMEOUT)."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

import sinks.startup
from kafka_io.clients import BrokerAccessError, check_access
from settings import load
from sinks.policy import S3BucketNotFoundError, SinkConfigurationError, SinkUnavailableError
from sinks.startup import StoreAccessError, check_stores


def _closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])  # closed again when the block ends: nothing listens there


def test_a_broker_that_never_answers_is_one_error_naming_broker_url_after_the_wait() -> None:
    port = _closed_port()
    kafka = load({"BROKER_URL": f"kafka://127.0.0.1:{port}"}).kafka
    started = time.monotonic()
    with pytest.raises(BrokerAccessError) as caught:
        asyncio.run(check_access(kafka, wait_s=2.0))
    waited = time.monotonic() - started
    assert 1.0 <= waited < 6.0, waited  # retried for about the wait, not at once and not for ever
    assert caught.value.setting == "BROKER_URL"
    assert str(caught.value).startswith(f"BROKER_URL: no broker answered at 127.0.0.1:{port} within 2 s "
                                        "(STARTUP_TIMEOUT; last: ")


class _Store:
    """A lake or Redis store whose check() plays back a script of outcomes (None: answers)."""

    def __init__(self, outcomes: list[BaseException | None], name: str = "store") -> None:
        self.outcomes = outcomes
        self.checks = 0
        self.bucket, self.prefix, self.target = "lake", "raw/", "redis://cache:6379/0"

    def open(self) -> None:
        pass

    def check(self) -> None:
        self.checks += 1
        outcome = self.outcomes[min(self.checks, len(self.outcomes)) - 1]
        if outcome is not None:
            raise outcome


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.startup, "CHECK_RETRY_S", 0.01)


def _check(lake: _Store, redis: _Store, wait_s: float = 5.0) -> None:
    store: Any = (lake, redis)
    asyncio.run(check_stores(*store, wait_s=wait_s))


def test_stores_that_answer_after_an_outage_pass() -> None:
    lake = _Store([SinkUnavailableError("S3 check failed: EndpointConnectionError"), None])
    redis = _Store([SinkUnavailableError("Redis check failed: ConnectionError"), None])
    _check(lake, redis)
    assert (lake.checks, redis.checks) == (2, 2)


@pytest.mark.parametrize(("lake", "redis", "line"), [
    ([S3BucketNotFoundError("S3 bucket 'lake' does not exist")], [None],
     "LAKE_URL: S3 bucket 'lake' does not exist"),
    ([SinkConfigurationError("S3 check of s3://lake/raw/ failed: InvalidAccessKeyId (HTTP 403)")], [None],
     "LAKE_URL: S3 check of s3://lake/raw/ failed: InvalidAccessKeyId (HTTP 403)"),
    ([None], [SinkConfigurationError("Redis check at redis://cache:6379/0 refused: AuthenticationError")],
     "REDIS_URL: Redis check at redis://cache:6379/0 refused: AuthenticationError"),
])
def test_a_store_that_refuses_is_one_error_at_once(lake: list[BaseException | None],
                                                   redis: list[BaseException | None], line: str) -> None:
    lake_store, redis_store = _Store(lake), _Store(redis)
    with pytest.raises(StoreAccessError) as caught:
        _check(lake_store, redis_store)
    assert str(caught.value) == line
    assert lake_store.checks + redis_store.checks <= 2  # not retried


@pytest.mark.parametrize(("lake", "redis", "line"), [
    ([SinkUnavailableError("S3 check failed: EndpointConnectionError")], [None],
     "S3_ENDPOINT_URL: S3 (s3://lake/raw/) did not answer within 0.3 s (STARTUP_TIMEOUT; last: S3 check failed: "
     "EndpointConnectionError)"),
    ([None], [SinkUnavailableError("Redis check failed: ConnectionError")],
     "REDIS_URL: Redis at redis://cache:6379/0 did not answer within 0.3 s (STARTUP_TIMEOUT; last: Redis check "
     "failed: ConnectionError)"),
])
def test_a_store_that_never_answers_is_one_error_after_the_wait(lake: list[BaseException | None],
                                                                redis: list[BaseException | None],
                                                                line: str) -> None:
    lake_store, redis_store = _Store(lake), _Store(redis)
    started = time.monotonic()
    with pytest.raises(StoreAccessError) as caught:
        _check(lake_store, redis_store, wait_s=0.3)
    assert time.monotonic() - started < 3.0
    assert str(caught.value) == line
    assert lake_store.checks + redis_store.checks > 3  # retried meanwhile


def test_a_store_that_hangs_is_cut_at_the_deadline() -> None:
    class Hanging(_Store):
        def check(self) -> None:
            time.sleep(2.0)

    async def main() -> tuple[float, StoreAccessError]:
        started = time.monotonic()
        store: Any = (Hanging([]), _Store([None]))
        try:
            await check_stores(*store, wait_s=0.3)
        except StoreAccessError as exc:
            return time.monotonic() - started, exc  # the thread is left behind: the process exits at once
        raise AssertionError("no StoreAccessError")

    waited, error = asyncio.run(main())
    assert waited < 1.5
    assert str(error) == ("S3_ENDPOINT_URL: S3 (s3://lake/raw/) did not answer within 0.3 s (STARTUP_TIMEOUT; last: "
                          "no answer)")
