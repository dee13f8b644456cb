"""The stores checked at start: a process that cannot use its lake or Redis says so in one line, naming the
setting, rather than retrying forever behind a traceback (the worker's writes retry outages *after* start).

S3BucketNotFoundError and refused credentials or passwords are errors at once; no answer is retried until
the deadline (STARTUP_TIMEOUT)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from sinks.lake import S3Lake
from sinks.policy import SinkConfigurationError, SinkUnavailableError
from sinks.redis_store import RedisWindowStore

__all__ = ["CHECK_RETRY_S", "StoreAccessError", "check_stores", "time_left_s"]

CHECK_RETRY_S = 1.0  # between attempts while a store does not answer


def time_left_s(wait_s: float, started: float) -> float:
    """What is left of one STARTUP_TIMEOUT of `wait_s` begun at `started` (time.monotonic()), for the stores'
    check after the broker's: the worker and `batch` give both checks one deadline, and the stores at least
    a second (one try) however long the broker took."""
    return max(1.0, wait_s - (time.monotonic() - started))


class StoreAccessError(Exception):
    """A store refuses this process, or has not answered by the deadline: a setting to fix (named)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


async def check_stores(lake: S3Lake, redis: RedisWindowStore, *, wait_s: float) -> None:
    """Check the lake, then Redis, each until it answers or `wait_s` has passed since the call."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s

    def check_lake() -> None:
        lake.open()
        lake.check()

    def check_redis() -> None:
        redis.open()
        redis.check()

    await _until_deadline(check_lake, deadline, wait_s, refused="LAKE_URL",
                          silent=("S3_ENDPOINT_URL", f"S3 (s3://{lake.bucket}/{lake.prefix})"))
    await _until_deadline(check_redis, deadline, wait_s, refused="REDIS_URL",
                          silent=("REDIS_URL", f"Redis at {redis.target}"))


async def _until_deadline(check: Callable[[], None], deadline: float, wait_s: float, *, refused: str,
                          silent: tuple[str, str]) -> None:
    """Run `check` until it passes; a refusal is StoreAccessError naming `refused` at once, no answer by the
    deadline is one naming `silent`'s setting and what did not answer."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            # A thread: the clients block. One that hangs past the deadline is left behind; the process ends.
            await asyncio.wait_for(loop.run_in_executor(None, check), max(0.1, deadline - loop.time()))
            return
        except SinkConfigurationError as exc:
            raise StoreAccessError(refused, str(exc)) from None
        except (SinkUnavailableError, TimeoutError) as exc:
            last = str(exc) or "no answer"
        if loop.time() + CHECK_RETRY_S > deadline:
            raise StoreAccessError(silent[0], f"{silent[1]} did not answer within {wait_s:g} s (STARTUP_TIMEOUT; "
                                              f"last: {last})")
        await asyncio.sleep(CHECK_RETRY_S)
