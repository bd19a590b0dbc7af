"""Sorting EC2 errors into retry kinds for CloudCaller, by AWS error code first, HTTP status second."""

from __future__ import annotations

from botocore.exceptions import ClientError, HTTPClientError, ParamValidationError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError

from providers.retry import ErrorKind

_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ServiceUnavailable",
        "Unavailable",
    }
)
_TRANSIENT = frozenset({"InternalError", "InternalFailure", "RequestTimeout", "RequestTimeoutException"})
# "Unsupported" is what EC2 says when an instance type is not offered in the subnet's zone.
_CAPACITY = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "InsufficientCapacity",
        "Unsupported",
    }
)
# A malformed id cannot name an existing instance: for delete that is "not found", not "invalid".
_NOT_FOUND = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
_INVALID = frozenset(
    {
        "UnauthorizedOperation",
        "AuthFailure",
        "MissingParameter",
        "IdempotentParameterMismatch",
        "OptInRequired",
    }
)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def classify(exc: BaseException) -> ErrorKind:
    """The ErrorKind of an exception raised by a boto3 EC2 call."""
    if isinstance(exc, ClientError):
        code, status = error_code(exc), _status(exc)
        if code in _THROTTLED:
            return ErrorKind.THROTTLED
        if code in _CAPACITY:
            return ErrorKind.CAPACITY
        if code in _NOT_FOUND:
            return ErrorKind.NOT_FOUND
        if code in _TRANSIENT:
            return ErrorKind.TRANSIENT
        if code in _INVALID or code.startswith("Invalid"):
            return ErrorKind.INVALID
        if status in (429, 503):
            return ErrorKind.THROTTLED
        if status >= 500:
            return ErrorKind.TRANSIENT
        if status >= 400:
            return ErrorKind.INVALID
        return ErrorKind.FATAL
    # An answer that is not EC2's XML (a proxy's error page, a cut-off body) is retried as botocore
    # suggests: every call made is safe to repeat (RunInstances carries a ClientToken).
    if isinstance(exc, BotoConnectionError | HTTPClientError | ResponseParserError):
        return ErrorKind.TRANSIENT
    if isinstance(exc, ParamValidationError):
        return ErrorKind.INVALID
    return ErrorKind.FATAL
