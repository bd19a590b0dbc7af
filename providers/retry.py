"""Calling a cloud SDK safely from asyncio: rate limiting, retries with backoff, and error mapping.

Every provider funnels its blocking SDK calls through one `CloudCaller`, so that 200 pods starting at
once share one client-side rate limit (token bucket) and back off together when the cloud throttles.
Each provider supplies a `classify` function that sorts its SDK's exceptions into `ErrorKind`s; the
caller retries only throttling and transient failures and turns the final failure into the provider
errors of `providers.base`, keeping the cloud's own code and message for the shim to show.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from prometheus_client import Counter
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from providers.base import CapacityError, InstanceNotFound, InvalidRequestError, ProviderError
from providers.settings import ConfigError, Setting, SettingValue

_log = logging.getLogger(__name__)

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class ErrorKind(Enum):
    """What a cloud error means for the caller."""

    THROTTLED = "throttled"  # the cloud's API rate limit: back off and retry
    TRANSIENT = "transient"  # server error or broken connection: retry
    CAPACITY = "capacity"  # no capacity for this instance type: try another type
    INVALID = "invalid"  # the request itself is wrong: never retry
    NOT_FOUND = "not-found"  # the resource does not exist
    FATAL = "fatal"  # anything else: give up


_RETRYABLE = frozenset({ErrorKind.THROTTLED, ErrorKind.TRANSIENT})

CLOUD_CALLS = Counter(
    "peerpods_cloud_api_calls", "Cloud API calls made (each attempt)", ["provider", "operation"]
)
CLOUD_THROTTLES = Counter(
    "peerpods_cloud_api_throttles", "Cloud API calls the cloud throttled", ["provider", "operation"]
)
CLOUD_ERRORS = Counter(
    "peerpods_cloud_api_errors", "Cloud API calls that failed, by the cloud's error code",
    ["provider", "operation", "code"],
)  # fmt: skip
MAX_CODE_LENGTH = 64  # a metric label: bounded, whatever an SDK puts in its error


def error_code(exc: BaseException) -> str:
    """The cloud's own error code if the SDK's exception carries one, else the exception's type.

    Read by shape, so that this module needs no SDK: EC2 (botocore) keeps it in
    `response["Error"]["Code"]`, ARM (azure-core) in `error.code`, Google API errors in `reason` or
    in the `reason` of the first entry of `errors` (the REST error body).
    """
    response = getattr(exc, "response", None)
    errors = getattr(exc, "errors", None)
    first_error = errors[0] if isinstance(errors, list) and errors else None
    candidates = (
        response.get("Error", {}).get("Code") if isinstance(response, dict) else None,
        getattr(getattr(exc, "error", None), "code", None),
        getattr(exc, "reason", None),
        first_error.get("reason") if isinstance(first_error, dict) else None,
    )
    code = next((c for c in candidates if isinstance(c, str) and c), type(exc).__name__)
    return code[:MAX_CODE_LENGTH]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to retry: total attempts, and the exponential backoff's first step and ceiling."""

    attempts: int = 8
    initial_s: float = 0.5
    max_s: float = 20.0


class RateLimiter:
    """Token bucket: `burst` calls back to back, then `rate_per_s` on average. Waiters are served FIFO.

    The first waiter in line holds a lock while it sleeps for the next token, so later callers queue
    behind it in arrival order and none can overtake. `clock` and `sleep` are injectable so that tests
    can drive the bucket with a fake clock.
    """

    def __init__(
        self,
        rate_per_s: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not (math.isfinite(rate_per_s) and rate_per_s > 0):
            raise ValueError(f"rate must be a positive number of calls per second, not {rate_per_s}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, not {burst}")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._stamp: float | None = None
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate_per_s)
        self._stamp = now

    async def acquire(self) -> None:
        """Wait for a token and take it."""
        async with self._lock:
            self._refill()
            if self._tokens < 1.0:
                await self._sleep((1.0 - self._tokens) / self.rate_per_s)
                self._refill()
            # After the sleep the bucket may be a hair short of a token (clock rounding); the debt
            # is carried over and paid by the next caller, so the average rate still holds.
            self._tokens -= 1.0


RATE_LIMIT_SETTINGS: list[Setting] = [
    Setting(
        "api-rate-limit",
        "CLOUD_API_RATE_LIMIT",
        float,
        10.0,
        help="cloud API calls per second made by this adaptor (client-side token bucket)",
    ),
    Setting(
        "api-burst",
        "CLOUD_API_BURST",
        int,
        20,
        help="cloud API calls allowed back to back before the rate limit applies",
    ),
]


def _positive_float(value: SettingValue | None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _positive_int(value: SettingValue | None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


def rate_limiter_from_config(config: Mapping[str, SettingValue | None]) -> RateLimiter:
    """The limiter described by RATE_LIMIT_SETTINGS' values; ConfigError if they make no sense."""
    rate = _positive_float(config.get("api_rate_limit"))
    burst = _positive_int(config.get("api_burst"))
    problems = []
    if rate is None:
        problems.append(
            "-api-rate-limit or CLOUD_API_RATE_LIMIT must be a positive number, "
            f"not {config.get('api_rate_limit')!r}"
        )
    if burst is None:
        problems.append(
            f"-api-burst or CLOUD_API_BURST must be an integer of at least 1, not {config.get('api_burst')!r}"
        )
    if rate is None or burst is None:
        raise ConfigError(problems)
    return RateLimiter(rate, burst)


def _no_retry_after(_exc: BaseException) -> float | None:
    return None


_FINAL_ERRORS: dict[ErrorKind, type[ProviderError]] = {
    ErrorKind.INVALID: InvalidRequestError,
    ErrorKind.CAPACITY: CapacityError,
    ErrorKind.NOT_FOUND: InstanceNotFound,
}


class CloudCaller:
    """Runs blocking SDK calls in worker threads, rate limited, retried, with errors mapped.

    The threads are our own pool (not asyncio's default one, which has only a handful of threads on a
    small node) so that many slow cloud calls can be in flight at once; the rate limiter, not the
    pool size, is what bounds the call rate. Call `close()` when the provider is torn down.
    """

    def __init__(
        self,
        classify: Callable[[BaseException], ErrorKind],
        limiter: RateLimiter,
        policy: RetryPolicy = RetryPolicy(),
        retry_after: Callable[[BaseException], float | None] = _no_retry_after,
        *,
        sleep: Sleep = asyncio.sleep,
        workers: int = 64,
        provider: str = "",
    ) -> None:
        self._classify = classify
        self._provider = provider
        self._limiter = limiter
        self._policy = policy
        self._retry_after = retry_after
        self._sleep = sleep
        self._backoff = wait_random_exponential(multiplier=policy.initial_s, max=policy.max_s)
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cloud-api")
        # A token is taken only once a worker is free: tokens taken while every worker is busy would
        # otherwise let the queued calls leave together, past the limiter, when workers free up.
        self._workers = asyncio.Semaphore(workers)

    def _retryable(self, exc: BaseException) -> bool:
        return not isinstance(exc, ProviderError) and self._classify(exc) in _RETRYABLE

    def _wait(self, state: RetryCallState) -> float:
        """Full-jitter exponential backoff, but never shorter than the cloud's own Retry-After."""
        backoff = self._backoff(state)
        exc = state.outcome.exception() if state.outcome is not None else None
        hint = self._retry_after(exc) if exc is not None else None
        return max(backoff, hint or 0.0)

    def _count_failure(self, operation: str, exc: Exception) -> None:
        if isinstance(exc, ProviderError):
            return  # raised by our own code in the call, not an answer from the cloud
        if self._classify(exc) == ErrorKind.THROTTLED:
            CLOUD_THROTTLES.labels(self._provider, operation).inc()
        CLOUD_ERRORS.labels(self._provider, operation, error_code(exc)).inc()

    @staticmethod
    def _log_retry(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        name = getattr(state.fn, "__name__", "cloud call")
        _log.warning("%s failed (attempt %d), retrying in %.2fs: %s", name, state.attempt_number, wait, exc)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` in a worker thread, each attempt taking a rate-limiter token.

        Throttling and transient errors are retried with backoff; the final failure is raised as
        InvalidRequestError, CapacityError, InstanceNotFound or ProviderError, with the cloud's message.
        A ProviderError raised by `fn` itself passes through unchanged.
        """
        loop = asyncio.get_running_loop()
        bound = functools.partial(fn, *args, **kwargs)
        # The SDK method's name (run_instances, begin_create_or_update); a provider's own wrapper
        # (_insert_sync) is named after the method it wraps.
        operation = getattr(fn, "__name__", "cloud call").strip("_").removesuffix("_sync")

        async def attempt() -> T:
            async with self._workers:
                await self._limiter.acquire()
                CLOUD_CALLS.labels(self._provider, operation).inc()
                try:
                    # In the caller's context: the SDK's own log lines carry the sandbox's log fields.
                    return await loop.run_in_executor(self._executor, contextvars.copy_context().run, bound)
                except Exception as exc:
                    self._count_failure(operation, exc)
                    raise

        attempt.__name__ = operation
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._policy.attempts),
            wait=self._wait,
            retry=retry_if_exception(self._retryable),
            before_sleep=self._log_retry,
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return await retrying(attempt)
        except ProviderError:
            raise
        except Exception as exc:
            kind = self._classify(exc)
            message = str(exc) or type(exc).__name__
            if kind in _RETRYABLE:
                attempts = retrying.statistics.get("attempt_number", 1)
                message = f"{message} (gave up after {attempts} attempts)"
            raise _FINAL_ERRORS.get(kind, ProviderError)(message) from exc

    def close(self) -> None:
        """Stop the worker threads; calls still queued are cancelled."""
        self._executor.shutdown(wait=False, cancel_futures=True)
