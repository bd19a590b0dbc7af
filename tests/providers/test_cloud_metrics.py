"""CloudCaller's counters (calls, throttles, errors by the cloud's code) and the code of each SDK's errors."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ODataV4Format
from google.api_core import exceptions as google_errors
from prometheus_client import REGISTRY

from providers.aws.errors import classify
from providers.base import InvalidRequestError
from providers.retry import CloudCaller, RateLimiter, RetryPolicy, error_code
from tests.providers.fake_clock import FakeClock
from tests.providers.test_aws_errors import client_error


def arm_error(code: str) -> HttpResponseError:
    error = HttpResponseError(message="no")
    error.error = ODataV4Format({"code": code, "message": "no"})  # what azure-core parses from the body
    return error


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (client_error("RequestLimitExceeded", 503), "RequestLimitExceeded"),
        (arm_error("SkuNotAvailable"), "SkuNotAvailable"),
        (google_errors.TooManyRequests("no", errors=[{"reason": "rateLimitExceeded"}]), "rateLimitExceeded"),
        (google_errors.NotFound("no"), "NotFound"),
        (ConnectionResetError("reset"), "ConnectionResetError"),
        (client_error("X" * 500, 400), "X" * 64),
    ],
)
def test_error_code_is_the_clouds_own(exc: BaseException, code: str) -> None:
    assert error_code(exc) == code


COUNTERS = ("calls", "throttles")


def samples() -> dict[tuple[str, ...], float]:
    """Every CloudCaller counter of the provider "test-cloud" (a label no other test uses)."""
    return {
        (family.name, *sample.labels.values()): sample.value
        for family in REGISTRY.collect()
        if family.name.startswith("peerpods_cloud_api_")
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels.get("provider") == "test-cloud"
    }


async def test_each_attempt_throttle_and_error_is_counted_under_provider_and_operation() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1000.0, 1000, clock=clock, sleep=clock.sleep)
    caller = CloudCaller(classify, limiter, RetryPolicy(attempts=3), sleep=clock.sleep, provider="test-cloud")
    answers: list[BaseException | None] = [client_error("RequestLimitExceeded", 503), None]

    def run_instances() -> str:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return "i-1"

    def _terminate_instances_sync() -> str:  # a provider's wrapper: labelled by the method it wraps
        raise client_error("InvalidParameterValue", 400)

    assert samples() == {}
    assert await caller.call(run_instances) == "i-1"
    with pytest.raises(InvalidRequestError):
        await caller.call(_terminate_instances_sync)
    caller.close()
    assert samples() == {
        ("peerpods_cloud_api_calls", "test-cloud", "run_instances"): 2,
        ("peerpods_cloud_api_throttles", "test-cloud", "run_instances"): 1,
        ("peerpods_cloud_api_errors", "test-cloud", "run_instances", "RequestLimitExceeded"): 1,
        ("peerpods_cloud_api_calls", "test-cloud", "terminate_instances"): 1,
        ("peerpods_cloud_api_errors", "test-cloud", "terminate_instances", "InvalidParameterValue"): 1,
    }
