"""Sorting azure-core exceptions into `ErrorKind`s for `CloudCaller`, from ARM's status and error code.

ARM reports errors as `{"error": {"code", "message"}}`; azure-core exposes them as `HttpResponseError`
with `.status_code` and `.error.code`. A long-running operation that ends Failed surfaces as an
`HttpResponseError` whose status is the (successful) status poll's, so the code decides there.
"""

from __future__ import annotations

import email.utils
import time

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from providers.retry import ErrorKind

# No room for this size right now; another size (or a later attempt) may work.
CAPACITY_CODES = frozenset(
    {
        "allocationfailed",
        "zonalallocationfailed",
        "overconstrainedallocationrequest",
        "overconstrainedzonalallocationrequest",
        "skunotavailable",
        "allocationtimedout",
    }
)
THROTTLED_CODES = frozenset({"toomanyrequests", "subscriptionrequeststhrottled", "tenantrequeststhrottled"})
TRANSIENT_CODES = frozenset(
    {"internalservererror", "internalexecutionerror", "servertimeout", "serviceunavailable", "retryableerror"}
)


def error_code(exc: BaseException) -> str:
    """ARM's error code of an azure-core error, or "" when there is none."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    return str(code) if code else ""


def classify(exc: BaseException) -> ErrorKind:
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ErrorKind.TRANSIENT  # connection refused/reset, timeouts: nothing reached ARM, or no answer
    if isinstance(exc, ClientAuthenticationError) or not isinstance(exc, HttpResponseError):
        return ErrorKind.FATAL
    code = error_code(exc).lower()
    status = exc.status_code or 0
    if code in CAPACITY_CODES:
        return ErrorKind.CAPACITY
    if status == 429 or code in THROTTLED_CODES:
        return ErrorKind.THROTTLED
    if status >= 500 or code in TRANSIENT_CODES:
        return ErrorKind.TRANSIENT
    if status == 404:
        # A 404 answering a read or delete means the resource itself is gone; answering a PUT it means
        # something the request refers to (image, subnet, NSG) does not exist: the request is wrong.
        method = getattr(getattr(exc.response, "request", None), "method", "")
        return ErrorKind.NOT_FOUND if method in ("GET", "DELETE") else ErrorKind.INVALID
    if 400 <= status < 500:
        return ErrorKind.INVALID
    if code.startswith("invalid") or code.endswith("notfound"):
        return ErrorKind.INVALID  # a long-running operation that failed on the request's content
    return ErrorKind.FATAL  # e.g. a long-running operation that failed for another reason


def retry_after(exc: BaseException) -> float | None:
    """Seconds from the response's Retry-After header (delta-seconds or HTTP date), if any."""
    response = getattr(exc, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
