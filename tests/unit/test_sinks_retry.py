"""Backoff delays and retry_forever, with a fake sleep: no real time passes."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from sinks.policy import (
    RetryPolicy,
    S3BucketNotFoundError,
    SinkConfigurationError,
    SinkUnavailableError,
    delays,
    retry_forever,
)


class FakeSleep:
    def __init__(self) -> None:
        self.delays_s: list[float] = []

    async def __call__(self, delay_s: float) -> None:
        self.delays_s.append(delay_s)


class Flaky:
    """Fails with the given errors in order, then returns `result`."""

    def __init__(self, errors: list[BaseException], result: str) -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def test_default_policy() -> None:
    assert RetryPolicy() == RetryPolicy(initial_delay_s=0.5, max_delay_s=30.0, multiplier=2.0, jitter=0.1)


def test_delays_without_jitter_double_then_cap() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=30.0, multiplier=2.0, jitter=0.0)
    assert list(itertools.islice(delays(policy, random.Random(1)), 10)) == [
        0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0,
    ]


def test_delays_with_jitter_stay_within_bounds_and_are_reproducible() -> None:
    policy = RetryPolicy()
    bases = [0.5, 1.0, 2.0, 4.0, 8.0, 16.0] + [30.0] * 194
    got = list(itertools.islice(delays(policy, random.Random(42)), 200))
    assert got == list(itertools.islice(delays(policy, random.Random(42)), 200))
    for base, delay in zip(bases, got, strict=True):
        assert base * 0.9 <= delay <= base
    assert max(got) <= policy.max_delay_s
    # Jitter really spreads the capped delays (not all exactly 30 s).
    assert len({round(d, 6) for d in got[6:]}) > 150
    # Exactly: delay = base * (1 - jitter * u), u drawn from the same seeded rng.
    rng = random.Random(42)
    assert got[:3] == [0.5 * (1 - 0.1 * rng.random()), 1.0 * (1 - 0.1 * rng.random()), 2.0 * (1 - 0.1 * rng.random())]


def test_delays_never_overflow() -> None:
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=5.0, multiplier=10.0, jitter=0.0)
    assert list(itertools.islice(delays(policy, random.Random(0)), 2000))[-1] == 5.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"initial_delay_s": 0.0}, "initial_delay_s must be > 0"),
        ({"initial_delay_s": 2.0, "max_delay_s": 1.0}, "max_delay_s must be >= initial_delay_s"),
        ({"multiplier": 0.5}, "multiplier must be >= 1"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"jitter": -0.1}, r"jitter must be in \[0, 1\)"),
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


def test_retries_transient_errors_with_backoff_then_returns() -> None:
    policy = RetryPolicy(initial_delay_s=0.5, max_delay_s=3.0, multiplier=2.0, jitter=0.0)
    errors = [SinkUnavailableError(f"down {i}") for i in range(5)]
    call = Flaky(errors, "done")
    sleep = FakeSleep()
    retries: list[tuple[int, str, float]] = []

    result = asyncio.run(retry_forever(
        call, policy=policy, sleep=sleep, on_retry=lambda n, exc, d: retries.append((n, str(exc), d)),
    ))

    assert result == "done"
    assert call.calls == 6
    assert sleep.delays_s == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert retries == [(1, "down 0", 0.5), (2, "down 1", 1.0), (3, "down 2", 2.0), (4, "down 3", 3.0),
                       (5, "down 4", 3.0)]


def test_jittered_delays_come_from_the_given_rng() -> None:
    policy = RetryPolicy()
    sleep = FakeSleep()
    result = asyncio.run(retry_forever(
        Flaky([SinkUnavailableError("x")] * 3, "ok"), policy=policy, sleep=sleep,
        on_retry=lambda *_: None, rng=random.Random(3),
    ))
    assert result == "ok"
    assert sleep.delays_s == list(itertools.islice(delays(policy, random.Random(3)), 3))


def test_success_at_first_attempt_never_sleeps() -> None:
    sleep = FakeSleep()
    retries: list[int] = []
    assert asyncio.run(retry_forever(Flaky([], 7), policy=RetryPolicy(), sleep=sleep,
                                     on_retry=lambda n, *_: retries.append(n))) == 7
    assert sleep.delays_s == []
    assert retries == []


@pytest.mark.parametrize("error", [SinkConfigurationError("403"), S3BucketNotFoundError("no bucket"),
                                   ValueError("bug")])
def test_non_transient_error_is_raised_at_once(error: Exception) -> None:
    call = Flaky([SinkUnavailableError("blip"), error], "never")
    sleep = FakeSleep()
    retries: list[int] = []
    with pytest.raises(type(error)) as raised:
        asyncio.run(retry_forever(call, policy=RetryPolicy(jitter=0.0), sleep=sleep,
                                  on_retry=lambda n, *_: retries.append(n)))
    assert raised.value is error
    assert call.calls == 2
    assert sleep.delays_s == [0.5]
    assert retries == [1]


def test_retry_on_selects_the_transient_types() -> None:
    call = Flaky([TimeoutError("t"), ConnectionResetError("r")], "ok")
    sleep = FakeSleep()
    result = asyncio.run(retry_forever(call, policy=RetryPolicy(jitter=0.0), sleep=sleep, on_retry=lambda *_: None,
                                       retry_on=(TimeoutError, ConnectionError)))
    assert result == "ok"
    assert sleep.delays_s == [0.5, 1.0]
    # SinkUnavailableError is not retried when the caller chose other types.
    with pytest.raises(SinkUnavailableError):
        asyncio.run(retry_forever(Flaky([SinkUnavailableError("x")], "ok"), policy=RetryPolicy(), sleep=FakeSleep(),
                                  on_retry=lambda *_: None, retry_on=(TimeoutError,)))


def test_cancellation_is_never_retried() -> None:
    call = Flaky([asyncio.CancelledError()], "never")
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(retry_forever(call, policy=RetryPolicy(), sleep=FakeSleep(), on_retry=lambda *_: None))
    assert call.calls == 1
