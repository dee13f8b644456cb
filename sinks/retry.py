"""Retry policy for sink writes: capped exponential backoff with jitter, retried forever.

Only transient failures (``SinkUnavailableError`` by default) are retried; the pending
window or file stays pending meanwhile, and the caller's backpressure bounds memory.
Anything else (a configuration error, a bug) is raised at once. Sleeping is injected, so
tests run without real time passing.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sinks.errors import SinkUnavailableError

__all__ = ["RetryPolicy", "delays", "retry_forever"]

T = TypeVar("T")


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
