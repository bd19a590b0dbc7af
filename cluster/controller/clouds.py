"""Cloud providers for the controller, built on first use per `spec.cloudProvider`, with the adaptor's code.

The settings and credentials are the adaptor's own: peer-pods-cm and peer-pods-secret, given to the
controller's container as environment (envFrom), read by the same settings tables. Each provider's
CloudCaller rate-limits and retries its calls (CLOUD_API_RATE_LIMIT / CLOUD_API_BURST). All four
clouds work, GCP included (upstream's peerpod-ctrl has no GCP provider).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

from protocols.extras import MissingExtraError
from providers import registry
from providers.base import Provider, ProviderError
from providers.settings import ConfigError, resolve

OWNER = "peerpods-controller"  # owner tag of instances it would create: it creates none


class CloudUnavailable(ProviderError):
    """The PeerPod names a provider this controller cannot build (unknown, missing extra or settings)."""


class Clouds:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._env = dict(env)
        self._providers: dict[str, Provider] = {}
        self._lock = asyncio.Lock()

    async def provider(self, name: str) -> Provider:
        async with self._lock:
            if name not in self._providers:
                self._providers[name] = self._build(name)
            return self._providers[name]

    def _build(self, name: str) -> Provider:
        if name not in registry.available():
            raise CloudUnavailable(f"unknown cloud provider {name[:40]!r}")
        try:
            plugin = registry.load(name)
            return plugin.create(resolve(plugin.settings, None, self._env), OWNER)
        except MissingExtraError as exc:
            raise CloudUnavailable(str(exc)) from None
        except ConfigError as exc:
            raise CloudUnavailable(f"{name} settings: {'; '.join(exc.problems)}") from None

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.teardown()
        self._providers.clear()
