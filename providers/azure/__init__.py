"""Azure provider plugin: settings are importable without the Azure SDK, which loads only in `create`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from providers.azure.config import SETTINGS, load_config
from providers.base import Provider
from providers.settings import Setting, SettingValue

log = logging.getLogger(__name__)
# The SDK logs every request at INFO over several lines, and a failed credential chain as a warning
# that our own start-up error repeats: keep the adaptor's log to its own lines.
logging.getLogger("azure").setLevel(logging.WARNING)
logging.getLogger("azure.identity").setLevel(logging.ERROR)


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
