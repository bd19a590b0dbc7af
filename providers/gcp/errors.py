"""Sorting google-api-core exceptions and Compute operation errors into our error kinds.

Compute Engine reports some failures synchronously (HTTP errors, as `GoogleAPICallError`s) and
others only in the finished operation (`error.errors[].code`, `httpErrorStatusCode`), notably
ZONE_RESOURCE_POOL_EXHAUSTED when a zone has no capacity for the machine type.
"""

from __future__ import annotations

import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from providers.base import CapacityError, InvalidRequestError, ProviderError
from providers.retry import ErrorKind

# Operation error codes meaning "not now, not this machine type" (a per-family quota is one too).
CAPACITY_CODES = frozenset(
    {"ZONE_RESOURCE_POOL_EXHAUSTED", "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "QUOTA_EXCEEDED"}
)
_THROTTLE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded"})
# The instance exists but is mid-transition (e.g. delete while still provisioning): try again.
_NOT_READY_REASONS = frozenset({"resourceNotReady"})


def _reasons(exc: api_exceptions.GoogleAPICallError) -> set[str]:
    """The `reason` of each entry of the REST error body's `errors` list."""
    reasons = {str(e["reason"]) for e in exc.errors if isinstance(e, dict) and "reason" in e}
    if exc.reason:
        reasons.add(exc.reason)
    return reasons


def classify(exc: BaseException) -> ErrorKind:
    """The ErrorKind of an exception raised by a google-cloud-compute call."""
    if isinstance(exc, api_exceptions.GoogleAPICallError):
        reasons = _reasons(exc)
        if reasons & CAPACITY_CODES:
            return ErrorKind.CAPACITY
        if isinstance(exc, api_exceptions.TooManyRequests) or reasons & _THROTTLE_REASONS:
            return ErrorKind.THROTTLED
        if reasons & _NOT_READY_REASONS:
            return ErrorKind.TRANSIENT
        if isinstance(exc, api_exceptions.NotFound):
            return ErrorKind.NOT_FOUND
        if isinstance(exc, api_exceptions.ServerError):
            return ErrorKind.TRANSIENT
        if isinstance(exc, api_exceptions.ClientError):
            return ErrorKind.INVALID
        return ErrorKind.FATAL
    if isinstance(exc, requests.ConnectionError | requests.Timeout | auth_exceptions.TransportError):
        return ErrorKind.TRANSIENT
    return ErrorKind.FATAL


def retry_after(exc: BaseException) -> float | None:
    """The Retry-After header (in seconds) of a throttled REST answer, if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: leave it to our own backoff
        return None


def operation_failure(codes: list[tuple[str, str]], http_status: int, http_message: str) -> ProviderError:
    """The error for a finished operation that failed: `codes` are its (code, message) pairs.

    Capacity errors may succeed with another machine type; a 4xx means the request was wrong; the
    rest is a plain ProviderError. None of them is retried here: the operation is over.
    """
    details = "; ".join(f"{code}: {message}" for code, message in codes) or http_message
    text = f"{details} (HTTP {http_status} {http_message})".strip()
    if any(code in CAPACITY_CODES for code, _ in codes):
        return CapacityError(text)
    if 400 <= http_status < 500:
        return InvalidRequestError(text)
    return ProviderError(text)
