"""The sinks' failure policy, in one place: what is transient, what is retried and for how long, and
what stops the worker. The writers (sinks/lake.py, sinks/redis_store.py) turn their clients' failures
into the two kinds below, and their callers act on the kind alone.

* **Transient** (``SinkUnavailableError``): S3 connection errors, timeouts, HTTP 5xx and 429 and the
  busy codes in ``S3_TRANSIENT_CODES`` (a conditional write racing another: retrying resolves it);
  Redis connection errors, timeouts and the replies of a busy or failing-over server
  (``REDIS_TRANSIENT_ERRORS``).
* **Permanent until a human acts** (``SinkConfigurationError``): access denied, missing or bad
  credentials, a missing bucket (``S3BucketNotFoundError``), a raw file under our name that we did
  not write (``ArchiveMetadataError``), Redis authentication and authorization errors
  (``REDIS_PERMANENT_ERRORS``) and any other error reply.

What each caller does with them:

* **The worker's writes** (raw files, window rows, alerts; sinks/outputs.py) retry a transient
  failure forever (``retry_forever``: capped exponential backoff with jitter, ``RetryPolicy``),
  while the data waits where it is: an export job keeps its stage-2 partition paused (the partials
  wait in Kafka, not in memory), and stage 1 buffers at most ``ARCHIVE_BUFFERED_FILES`` raw files
  per input partition before it pauses that partition (agents/ingest.py). A permanent failure, or
  any other exception, stops the worker (crash-only, status 70: sinks/archive.py hands the archive's
  error to its stage, an export job's error ends its partition's loop): a supervisor restarts it
  and it resumes from its durable state.
* **The web views' reads** make one attempt: a store outage answers 503 at once.
* **The batch job** (commands/batch.py) leaves retries to botocore, ``BATCH_S3_ATTEMPTS`` attempts
  per S3 call, then ends the run in one line with status 1; the next scheduled run starts again.

Messages name the destination (bucket and key, or a Redis host without its password) and never
carry credentials. Sleeping is injected into ``retry_forever``, so tests run without real time passing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Final, TypeVar

import redis

__all__ = [
    "ARCHIVE_BUFFERED_FILES",
    "BATCH_S3_ATTEMPTS",
    "REDIS_PERMANENT_ERRORS",
    "REDIS_TRANSIENT_ERRORS",
    "REDIS_TRANSIENT_REPLIES",
    "S3_BUCKET_NOT_FOUND_CODES",
    "S3_PRECONDITION_FAILED_CODES",
    "S3_TRANSIENT_CODES",
    "ArchiveMetadataError",
    "RetryPolicy",
    "S3BucketNotFoundError",
    "SinkConfigurationError",
    "SinkUnavailableError",
    "delays",
    "retry_forever",
    "s3_failure_is_transient",
]

T = TypeVar("T")

# Raw files stage 1 holds per input partition while S3 is slow or down, before it pauses the partition.
ARCHIVE_BUFFERED_FILES: Final = 2
# botocore's own attempts per S3 call in the batch job, which has no retry loop of its own.
BATCH_S3_ATTEMPTS: Final = 5

# S3 error codes that mean "the service is busy or briefly broken": retry later.
S3_TRANSIENT_CODES: Final = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequests",
    "RequestTimeout", "InternalError", "ServiceUnavailable", "OperationAborted",
    # A concurrent conditional write to the same key (AWS: 409); retrying resolves it to 200 or 412.
    "ConditionalRequestConflict",
})
S3_BUCKET_NOT_FOUND_CODES: Final = frozenset({"NoSuchBucket"})
S3_PRECONDITION_FAILED_CODES: Final = frozenset({"PreconditionFailed"})

# Subclasses of redis' ConnectionError that no retry can fix.
REDIS_PERMANENT_ERRORS: Final = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
# Server replies that mean "busy or failing over", and the connection failures: retry later.
REDIS_TRANSIENT_ERRORS: Final = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ReadOnlyError,  # replica promoted / failover in progress
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.OutOfMemoryError,  # maxmemory reached; expiring TTLs free memory
)
# Error replies redis-py raises as a plain ResponseError that mean "not now": a script running past
# its time limit (BUSY), a replica without its master (MASTERDOWN).
REDIS_TRANSIENT_REPLIES: Final = ("BUSY ", "MASTERDOWN ")


class SinkUnavailableError(Exception):
    """Transient: connection refused or reset, timeout, 5xx, throttling. Retry later."""


class SinkConfigurationError(Exception):
    """Permanent until a human acts: access denied, bad credentials, wrong key type. Not retried."""


class S3BucketNotFoundError(SinkConfigurationError):
    """The configured bucket does not exist (a configuration error, not retried)."""


class ArchiveMetadataError(SinkConfigurationError):
    """An existing raw-archive object lacks valid ``end-offset`` metadata: something else wrote it."""


def s3_failure_is_transient(code: str, status: int) -> bool:
    """Whether an S3 error reply (its code and HTTP status) is worth a retry."""
    return status >= 500 or status == 429 or code in S3_TRANSIENT_CODES


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delay n (n = 0, 1, ...) is ``min(max_delay_s, initial_delay_s * multiplier**n)`` minus
    up to ``jitter`` of itself, drawn uniformly: it lies in ``[base * (1 - jitter), base]``.

    Jitter only shortens delays, so ``max_delay_s`` is a true maximum while workers that
    failed together still spread out.
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not self.initial_delay_s > 0:
            raise ValueError(f"initial_delay_s must be > 0, got {self.initial_delay_s!r}")
        if not self.max_delay_s >= self.initial_delay_s:
            raise ValueError(f"max_delay_s must be >= initial_delay_s, got {self.max_delay_s!r}")
        if not self.multiplier >= 1:
            raise ValueError(f"multiplier must be >= 1, got {self.multiplier!r}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {self.jitter!r}")


def delays(policy: RetryPolicy, rng: random.Random) -> Iterator[float]:
    """Endless backoff delays in seconds (see RetryPolicy)."""
    base = policy.initial_delay_s
    while True:
        yield base * (1.0 - policy.jitter * rng.random())
        # Grown step by step and capped each time: never overflows, however long it runs.
        base = min(policy.max_delay_s, base * policy.multiplier)


async def retry_forever(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]],
    on_retry: Callable[[int, BaseException, float], None],
    retry_on: tuple[type[BaseException], ...] = (SinkUnavailableError,),
    rng: random.Random | None = None,
) -> T:
    """Await ``call()`` until it succeeds, retrying only ``retry_on`` errors, forever.

    Before each retry, ``on_retry(attempt, error, delay_s)`` is called (attempt 1 is the
    first failure; log there) and then ``sleep(delay_s)`` is awaited. Other exceptions,
    including cancellation, propagate immediately.
    """
    backoff = delays(policy, rng if rng is not None else random.Random())
    attempt = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            attempt += 1
            delay_s = next(backoff)
            on_retry(attempt, exc, delay_s)
            await sleep(delay_s)
