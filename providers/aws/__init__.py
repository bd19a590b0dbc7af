"""AWS EC2 provider (boto3): `PLUGIN` is what the registry loads."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from providers.aws.config import SETTINGS, WORKERS, AwsConfig, make_client, parse_config
from providers.aws.errors import classify
from providers.aws.provider import AwsProvider
from providers.retry import RATE_LIMIT_SETTINGS, CloudCaller, RateLimiter, rate_limiter_from_config
from providers.settings import ConfigError, Setting, SettingValue

__all__ = ["PLUGIN", "AwsConfig", "AwsPlugin", "AwsProvider"]

T = TypeVar("T")
Values = Mapping[str, SettingValue | None]


def _collect(problems: list[str], parse: Callable[[Values], T], values: Values) -> T | None:
    try:
        return parse(values)
    except ConfigError as exc:
        problems.extend(exc.problems)
        return None


class AwsPlugin:
    """Builds an AwsProvider from upstream's AWS settings plus the shared rate-limit settings."""

    name = "aws"
    settings: list[Setting] = [*SETTINGS, *RATE_LIMIT_SETTINGS]

    def create(self, config: Values, owner: str) -> AwsProvider:
        """No cloud call happens here; the provider's `validate()` checks the settings against EC2."""
        problems: list[str] = []
        aws_config: AwsConfig | None = _collect(problems, parse_config, config)
        limiter: RateLimiter | None = _collect(problems, rate_limiter_from_config, config)
        if aws_config is None or limiter is None:
            raise ConfigError(problems)
        client = make_client(aws_config)
        return AwsProvider(
            aws_config, owner, client, CloudCaller(classify, limiter, workers=WORKERS, provider="aws")
        )


PLUGIN = AwsPlugin()
