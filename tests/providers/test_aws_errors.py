"""EC2 error classification for CloudCaller: by AWS error code first, HTTP status second."""

from __future__ import annotations

import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)

from providers.aws.errors import classify
from providers.retry import ErrorKind


def client_error(code: str, status: int, operation: str = "RunInstances") -> ClientError:
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}
    return ClientError(response, operation)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("Throttling", 400, ErrorKind.THROTTLED),
        ("RequestLimitExceeded", 503, ErrorKind.THROTTLED),
        ("ServiceUnavailable", 503, ErrorKind.THROTTLED),
        ("SomethingNew", 503, ErrorKind.THROTTLED),
        ("SomethingNew", 429, ErrorKind.THROTTLED),
        ("InternalError", 500, ErrorKind.TRANSIENT),
        ("SomethingNew", 502, ErrorKind.TRANSIENT),
        # Capacity answers are 500s: the code must win over the status.
        ("InsufficientInstanceCapacity", 500, ErrorKind.CAPACITY),
        ("Unsupported", 400, ErrorKind.CAPACITY),
        ("InvalidAMIID.NotFound", 400, ErrorKind.INVALID),
        ("InvalidAMIID.Malformed", 400, ErrorKind.INVALID),
        ("InvalidSubnetID.NotFound", 400, ErrorKind.INVALID),
        ("InvalidGroup.NotFound", 400, ErrorKind.INVALID),
        ("InvalidParameterValue", 400, ErrorKind.INVALID),
        ("InvalidParameterCombination", 400, ErrorKind.INVALID),
        ("UnauthorizedOperation", 403, ErrorKind.INVALID),
        ("SomethingNew", 400, ErrorKind.INVALID),
        ("InvalidInstanceID.NotFound", 400, ErrorKind.NOT_FOUND),
        ("InvalidInstanceID.Malformed", 400, ErrorKind.NOT_FOUND),
        ("SomethingNew", 200, ErrorKind.FATAL),
    ],
)
def test_client_errors(code: str, status: int, kind: ErrorKind) -> None:
    assert classify(client_error(code, status)) is kind


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (EndpointConnectionError(endpoint_url="https://ec2.example"), ErrorKind.TRANSIENT),
        (ConnectTimeoutError(endpoint_url="https://ec2.example"), ErrorKind.TRANSIENT),
        (ReadTimeoutError(endpoint_url="https://ec2.example"), ErrorKind.TRANSIENT),
        (ParamValidationError(report="bad"), ErrorKind.INVALID),
        (NoCredentialsError(), ErrorKind.FATAL),
        (RuntimeError("bug"), ErrorKind.FATAL),
    ],
)
def test_other_errors(exc: BaseException, kind: ErrorKind) -> None:
    assert classify(exc) is kind
