"""CloudCaller and RateLimiter: retries, error mapping and rate limiting, on a fake clock."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from providers.base import CapacityError, InstanceNotFound, InvalidRequestError, ProviderError
from providers.retry import (
    RATE_LIMIT_SETTINGS,
    CloudCaller,
    ErrorKind,
    RateLimiter,
    RetryPolicy,
    rate_limiter_from_config,
)
from providers.settings import ConfigError, resolve
from tests.providers.fake_clock import FakeClock


class CloudFault(Exception):
    def __init__(self, kind: ErrorKind, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message or f"cloud says {kind.value}")
        self.kind = kind
        self.retry_after = retry_after


def classify(exc: BaseException) -> ErrorKind:
    return exc.kind if isinstance(exc, CloudFault) else ErrorKind.FATAL


def retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, CloudFault) else None


def failing(faults: list[CloudFault], result: str = "ok") -> tuple[Callable[[], str], list[str]]:
    """A blocking 'SDK call' that raises the given faults in turn, then returns `result`."""
    threads: list[str] = []

    def call() -> str:
        threads.append(threading.current_thread().name)
        if faults:
            raise faults.pop(0)
        return result

    return call, threads


def make_caller(clock: FakeClock, attempts: int = 4, limiter: RateLimiter | None = None) -> CloudCaller:
    limiter = limiter or RateLimiter(1000.0, 1000, clock=clock, sleep=clock.sleep)
    policy = RetryPolicy(attempts=attempts, initial_s=0.5, max_s=4.0)
    return CloudCaller(classify, limiter, policy, retry_after, sleep=clock.sleep)


async def test_throttling_and_transient_errors_are_retried_in_worker_threads() -> None:
    clock = FakeClock()
    caller = make_caller(clock)
    call, threads = failing([CloudFault(ErrorKind.THROTTLED), CloudFault(ErrorKind.TRANSIENT)])
    assert await caller.call(call) == "ok"
    assert len(threads) == 3
    assert all(name.startswith("cloud-api") for name in threads)
    assert len(clock.sleeps) == 2
    assert all(0 <= s <= 4.0 for s in clock.sleeps)
    caller.close()


async def test_arguments_are_passed_through() -> None:
    caller = make_caller(FakeClock())
    assert await caller.call(lambda a, b=0: a + b, 2, b=3) == 5
    caller.close()


async def test_retry_after_is_honoured() -> None:
    clock = FakeClock()
    caller = make_caller(clock)
    call, _ = failing([CloudFault(ErrorKind.THROTTLED, retry_after=30.0)])
    assert await caller.call(call) == "ok"
    assert clock.sleeps == [30.0]
    caller.close()


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        (ErrorKind.INVALID, InvalidRequestError),
        (ErrorKind.CAPACITY, CapacityError),
        (ErrorKind.NOT_FOUND, InstanceNotFound),
        (ErrorKind.FATAL, ProviderError),
    ],
)
async def test_other_errors_are_not_retried_and_keep_the_clouds_message(
    kind: ErrorKind, error: type[ProviderError]
) -> None:
    clock = FakeClock()
    caller = make_caller(clock)
    fault = CloudFault(kind, "(InvalidAMIID.NotFound) The image id '[ami-1]' does not exist")
    call, threads = failing([fault])
    with pytest.raises(error) as raised:
        await caller.call(call)
    assert type(raised.value) is error
    assert str(raised.value) == "(InvalidAMIID.NotFound) The image id '[ami-1]' does not exist"
    assert raised.value.__cause__ is fault
    assert len(threads) == 1
    assert clock.sleeps == []
    caller.close()


async def test_retries_stop_after_the_policys_attempts() -> None:
    clock = FakeClock()
    caller = make_caller(clock, attempts=3)
    call, threads = failing([CloudFault(ErrorKind.THROTTLED, "Rate exceeded") for _ in range(5)])
    with pytest.raises(ProviderError) as raised:
        await caller.call(call)
    assert type(raised.value) is ProviderError
    assert str(raised.value) == "Rate exceeded (gave up after 3 attempts)"
    assert len(threads) == 3
    caller.close()


async def test_provider_errors_raised_by_the_call_pass_through() -> None:
    caller = make_caller(FakeClock())

    def call() -> None:
        raise InstanceNotFound("i-123")

    with pytest.raises(InstanceNotFound, match="i-123"):
        await caller.call(call)
    caller.close()


async def test_every_attempt_takes_a_token() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1.0, 1, clock=clock, sleep=clock.sleep)
    caller = CloudCaller(
        classify, limiter, RetryPolicy(attempts=3, initial_s=0.001, max_s=0.001), sleep=clock.sleep
    )
    call, threads = failing([CloudFault(ErrorKind.TRANSIENT), CloudFault(ErrorKind.TRANSIENT)])
    assert await caller.call(call) == "ok"
    assert len(threads) == 3
    # Three tokens at 1/s with a burst of 1: the limiter made the caller wait about two seconds.
    assert clock.now >= 1.99
    caller.close()


async def test_rate_limiter_bounds_every_window_and_serves_fifo() -> None:
    clock = FakeClock()
    rate, burst, n = 4.0, 5, 45
    limiter = RateLimiter(rate, burst, clock=clock, sleep=clock.sleep)
    granted: list[tuple[int, float]] = []

    async def take(i: int) -> None:
        await limiter.acquire()
        granted.append((i, clock.now))

    await asyncio.gather(*(take(i) for i in range(n)))
    assert [i for i, _ in granted] == list(range(n))
    times = [t for _, t in granted]
    assert times[:burst] == [0.0] * burst
    # Token bucket law: at most burst + rate * span calls in any span of time.
    for start in range(n):
        for end in range(start, n):
            span = times[end] - times[start]
            assert end - start + 1 <= burst + rate * span + 1e-6
    assert times[-1] == pytest.approx((n - burst) / rate)


async def test_rate_limiter_refills_while_idle() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2.0, 3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await limiter.acquire()
    assert clock.sleeps == []
    clock.now += 100.0  # a long idle period refills the bucket, but only up to the burst
    for _ in range(3):
        await limiter.acquire()
    assert clock.sleeps == []
    await limiter.acquire()
    assert clock.sleeps == [pytest.approx(0.5)]


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (float("nan"), 1), (1.0, 0)])
def test_rate_limiter_rejects_nonsense(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter(rate, burst)


async def test_rate_limit_settings_from_environment() -> None:
    values = resolve(RATE_LIMIT_SETTINGS, None, {"CLOUD_API_RATE_LIMIT": "20", "CLOUD_API_BURST": "7"})
    limiter = rate_limiter_from_config(values)
    assert (limiter.rate_per_s, limiter.burst) == (20.0, 7)
    defaults = rate_limiter_from_config(resolve(RATE_LIMIT_SETTINGS, None, {}))
    assert defaults.rate_per_s > 0 and defaults.burst >= 1


def test_bad_rate_limit_settings_are_all_reported() -> None:
    values = resolve(RATE_LIMIT_SETTINGS, None, {"CLOUD_API_RATE_LIMIT": "0", "CLOUD_API_BURST": "-2"})
    with pytest.raises(ConfigError) as err:
        rate_limiter_from_config(values)
    assert len(err.value.problems) == 2
    assert "CLOUD_API_RATE_LIMIT" in err.value.problems[0]
    assert "CLOUD_API_BURST" in err.value.problems[1]
