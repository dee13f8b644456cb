"""The pipeline's external stores (S3 lake, Redis) behind one retrying, non-blocking facade.

boto3 and redis-py block, so every call runs in a worker thread. A transient failure
(store down, timeout, throttling) is retried with exponential backoff for as long as it
takes, while the caller waits: the window or archive file stays pending and its input
offsets are not committed, so nothing is lost and memory does not grow. Configuration
errors (missing bucket, access denied) are not retried: they crash the worker loudly.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from agents.stats import PipelineStats
from settings import Settings
from sinks.lake import ArchiveOutcome, S3Lake, make_s3_client_factory
from sinks.redis_store import RedisWindowStore
from sinks.retry import RetryPolicy, retry_forever
from sinks.rows import WindowRow

log = logging.getLogger(__name__)
T = TypeVar("T")


class Outputs:
    def __init__(self, settings: Settings, stats: PipelineStats, policy: RetryPolicy | None = None) -> None:
        lake = settings.lake
        redis = settings.redis
        self.lake = S3Lake(lake.bucket, lake.prefix, make_s3_client_factory(lake.endpoint_url, lake.region))
        self.redis = RedisWindowStore(redis.url, redis.key_prefix, redis.ttl_ms, redis.latest_n)
        self.stats = stats
        self.policy = policy or RetryPolicy()
        self._rng = random.Random()
        self._open_lock = threading.Lock()
        self._opened = False

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened:
                self.lake.open()
                self.redis.open()
                self._opened = True

    async def call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()

        def run() -> T:
            self._ensure_open()
            return fn(*args)

        def on_retry(attempt: int, error: BaseException, delay_s: float) -> None:
            self.stats.sink_retries += 1
            log.warning("%s failed (attempt %d): %s; retrying in %.1fs", what, attempt, error, delay_s)

        return await retry_forever(lambda: loop.run_in_executor(None, run), policy=self.policy,
                                   sleep=asyncio.sleep, on_retry=on_retry, rng=self._rng)

    async def put_archive(self, partition: int, start_offset: int,
                          records: Sequence[tuple[int, int, Any]]) -> ArchiveOutcome:
        return await self.call("raw archive write", self.lake.put_archive, partition, start_offset, records)

    async def export_window(self, window: str, start_ms: int, part: int, rows: Sequence[WindowRow]) -> None:
        key = await self.call("aggregate write to S3", self.lake.put_aggregates, window, start_ms, part, rows)
        await self.call("aggregate write to Redis", self.redis.write, rows)
        log.info("exported %s window %d: %d event types to s3 %s and Redis", window, start_ms, len(rows), key)

    def close(self) -> None:
        with self._open_lock:
            if self._opened:
                self.redis.close()
                self.lake.close()
                self._opened = False
