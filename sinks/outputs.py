"""The pipeline's external stores (S3 lake, Redis) behind one retrying, non-blocking facade.

boto3 and redis-py block, so every call runs in a worker thread. A transient failure
(store down, timeout, throttling) is retried with exponential backoff for as long as it
takes, while the caller waits: the window or archive file stays pending and its input
offsets are not committed, so nothing is lost and memory does not grow. Configuration
errors (missing bucket, access denied) are not retried: they crash the worker loudly.

Reads for the web views (and the batch-status sample) run on their own few threads, not on the
event loop's default executor that the window and archive writes use: a burst of API requests then
waits for its own threads, never in front of an export, and an export never holds up a health read.
At most MAX_WAITING_READS reads wait for those threads; one more is refused at once (503 with
Retry-After) rather than queued without bound.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

import pyarrow as pa

from formats.aggregates import AggregateColumns, AggregateLayout, AggregateRow
from formats.batch import AggregateRollupLayout, BatchStatus, RollupRow
from formats.rows import WindowRow
from ops.metrics import PipelineMetrics
from ops.stats import PipelineStats
from settings import Settings
from sinks.lake import ArchiveOutcome, ListingCache, ObjectCache, S3Lake, make_s3_client_factory
from sinks.policy import RetryPolicy, SinkUnavailableError, retry_forever
from sinks.ranking import TopKeys, read_top_keys
from sinks.redis_store import RedisWindowStore
from sinks.rollups import AggregateRollupRead, RollupRead, read_aggregate_rollups, read_rollups
from tables.families import Family

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_THREADS: Final = 2  # threads of the reads (each may GET several lake objects at once: sinks/lake.py)
MAX_WAITING_READS: Final = 32  # reads queued for them before another is refused


class ReadsBusyError(SinkUnavailableError):
    """Too many reads waiting: the web view answers 503 with Retry-After, the client tries again later."""


class Outputs:
    def __init__(self, settings: Settings, stats: PipelineStats, metrics: PipelineMetrics,
                 policy: RetryPolicy | None = None) -> None:
        lake = settings.lake
        redis = settings.redis
        self.lake = S3Lake(lake.bucket, lake.prefix, make_s3_client_factory(lake.endpoint_url, lake.region))
        self.redis = RedisWindowStore(redis.url, redis.key_prefix, redis.ttl_ms, redis.latest_n)
        self.stats = stats
        self.metrics = metrics
        self.policy = policy or RetryPolicy()
        self._rng = random.Random()
        self._open_lock = threading.Lock()
        self._opened = False
        self._window_objects: ObjectCache[pa.Table] = ObjectCache()  # the top keys' decoded window objects
        self._rollup_objects: ObjectCache[list[RollupRow]] = ObjectCache()
        self._aggregate_rollup_objects: ObjectCache[pa.Table] = ObjectCache()
        self._rollup_listings = ListingCache()
        self._reader: ThreadPoolExecutor | None = None  # created at the first read, shut down by close()
        self._reads = 0  # reads running or waiting for a reader thread

    def _ensure_open(self) -> None:
        with self._open_lock:
            if not self._opened:
                self.lake.open()
                self.redis.open()
                self._opened = True

    async def call(self, sink: str, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call in a thread, retrying transient failures forever."""
        loop = asyncio.get_running_loop()
        metrics = self.metrics
        latency = metrics.sink_write_seconds.labels(sink, operation)
        errors = metrics.sink_errors.labels(sink, operation)

        def run() -> T:
            started = time.perf_counter()
            try:
                self._ensure_open()
                return fn(*args)
            except BaseException:
                errors.inc()
                raise
            finally:
                latency.observe(time.perf_counter() - started)

        def on_retry(attempt: int, error: BaseException, delay_s: float) -> None:
            self.stats.sink_retries += 1
            metrics.sink_retries.labels(sink, operation).inc()
            log.warning("%s %s write failed (attempt %d): %s; retrying in %.1fs", sink, operation, attempt, error,
                        delay_s)

        return await retry_forever(lambda: loop.run_in_executor(None, run), policy=self.policy,
                                   sleep=asyncio.sleep, on_retry=on_retry, rng=self._rng)

    async def put_archive(self, partition: int, start_offset: int,
                          records: Sequence[tuple[int, int, Any]]) -> ArchiveOutcome:
        return await self.call("s3", "archive", self.lake.put_archive, partition, start_offset, records)

    async def export_window(self, window: str, start_ms: int, part: int, rows: Sequence[WindowRow]) -> str:
        """Write one closed window's rows to S3, then Redis; returns the S3 object key."""
        key = await self.call("s3", "aggregates", self.lake.put_aggregates, window, start_ms, part, rows)
        await self.call("redis", "windows", self.redis.write, rows)
        return key

    async def export_aggregate(self, family: Family, part: int, columns: AggregateColumns) -> str:
        """Write one closed window instance's rows of a spec's aggregation to S3, then to Redis as its
        output says; returns the S3 object key."""
        aggregation = family.aggregation
        assert aggregation is not None, "the article's windows are export_window's"
        layout = aggregation.layout()
        key = await self.call("s3", "aggregates", self.lake.put_aggregate_columns, columns, part, layout)
        await self.call("redis", "windows", self.redis.write_aggregate_columns, columns, layout, aggregation.redis)
        return key

    async def write_alerts(self, alerts: Sequence[tuple[str, str, int, bytes]]) -> None:
        """Alerts to Redis (sinks.redis_store.RedisWindowStore.write_alerts), retried like the windows."""
        await self.call("redis", "alerts", self.redis.write_alerts, alerts)

    async def read_alerts(self, n: int) -> tuple[list[bytes], list[bytes]]:
        return await self.call_once("redis", "read", self.redis.read_alerts, n)

    async def read_window(self, window: str, event_type: str, start_ms: int) -> WindowRow | None:
        """One closed window from Redis (None if unknown or expired); not retried: callers are readers."""
        return await self.call_once("redis", "read", self.redis.get_window, window, event_type, start_ms)

    async def read_latest(self, window: str, event_type: str, n: int) -> list[WindowRow]:
        return await self.call_once("redis", "read", self.redis.latest, window, event_type, n)

    async def read_latest_aggregates(self, aggregation: str, window: str, key: Sequence[str | int | bool | None],
                                     n: int, layout: AggregateLayout) -> list[AggregateRow]:
        return await self.call_once("redis", "read", self.redis.latest_aggregates, aggregation, window, key, n, layout)

    async def read_event_types(self, window: str, n: int) -> list[str]:
        return await self.call_once("redis", "read", self.redis.event_types, window, n)

    async def read_redis_server(self) -> tuple[str, str, str]:
        """(product, version, host) of the Redis server (sinks.redis_store.RedisWindowStore.server)."""
        return await self.call_once("redis", "read", self.redis.server)

    async def read_batch_status(self) -> BatchStatus | None:
        return await self.call_once("redis", "read", self.redis.read_batch_status)

    async def read_rollups(self, period: str, from_ms: int, to_ms: int, event_type: str | None,
                           limit: int) -> RollupRead:
        """The batch layer's first `limit` rollup rows of [from_ms, to_ms) from the lake (sinks/rollups.py; objects
        cached by ETag); not retried."""
        return await self.call_once("s3", "read", read_rollups, self.lake, self._rollup_objects, self._rollup_listings,
                                    period, from_ms, to_ms, event_type, limit)

    async def read_aggregate_rollups(self, aggregation: str, layout: AggregateRollupLayout, period: str,
                                     from_ms: int, to_ms: int, key: Mapping[str, Any],
                                     limit: int) -> AggregateRollupRead:
        """A spec's aggregation's first `limit` rollup rows of [from_ms, to_ms) matching `key`, from the lake;
        not retried."""
        return await self.call_once("s3", "read", read_aggregate_rollups, self.lake, self._aggregate_rollup_objects,
                                    self._rollup_listings, aggregation, layout, period, from_ms, to_ms, key, limit)

    async def read_top_keys(self, aggregation: str, layout: AggregateLayout, window: str, newest_start_ms: int,
                            measure: str, statistic: str, descending: bool, n: int, exact_start: bool) -> TopKeys:
        """A closed window's top keys by a measure statistic, from the lake (sinks/ranking.py); not retried."""
        return await self.call_once("s3", "read", read_top_keys, self.lake, self._window_objects, aggregation, layout,
                                    window, newest_start_ms, measure, statistic, descending, n, exact_start)

    async def call_once(self, sink: str, operation: str, fn: Callable[..., T], *args: Any) -> T:
        """A read for the web views: one attempt on the readers' threads, so a store outage answers 503 at
        once; ReadsBusyError when MAX_WAITING_READS are already waiting."""
        if self._reads >= READ_THREADS + MAX_WAITING_READS:
            raise ReadsBusyError(f"{self._reads} reads in progress or waiting; try again shortly")

        def run() -> T:
            self._ensure_open()
            return fn(*args)

        if self._reader is None:
            self._reader = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="reads")
        self._reads += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._reader, run)
        finally:
            self._reads -= 1

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)
        with self._open_lock:
            if self._opened:
                self.redis.close()
                self.lake.close()
                self._opened = False
