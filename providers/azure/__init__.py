"""Azure provider plugin: settings are importable without the Azure SDK, which loads only in `create`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from providers.azure.config import SETTINGS, load_config
from providers.base import Provider
from providers.settings import Setting, SettingValue

log = logging.getLogger(__name__)


class AzurePlugin:
    name = "azure"
    settings: Sequence[Setting] = SETTINGS

    def create(self, config: Mapping[str, SettingValue | None], owner: str) -> Provider:
        azure_config, limiter = load_config(config)
        if config.get("zone"):
            log.warning("-zone has no effect, as upstream: Azure chooses the availability zone")
        from providers.azure.provider import AzureProvider

        return AzureProvider(azure_config, owner, limiter)


PLUGIN = AzurePlugin()
