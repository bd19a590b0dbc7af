"""Which providers exist, imported lazily so that a cloud's SDK loads only when it is used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import Protocol

from providers.base import Provider
from providers.settings import Setting, SettingValue


class ProviderPlugin(Protocol):
    """A provider's entry point: its settings, and how to build it from their values."""

    name: str
    settings: Sequence[Setting]

    def create(self, config: Mapping[str, SettingValue | None], owner: str) -> Provider:
        """Build the provider; raise `ConfigError` for a missing or contradictory setting."""
        ...


# name -> "module:attribute" of a ProviderPlugin
_PLUGINS: dict[str, str] = {
    "aws": "providers.aws:PLUGIN",
    "azure": "providers.azure:PLUGIN",
    "gcp": "providers.gcp:PLUGIN",
    "local": "providers.local:PLUGIN",
    "libvirt": "providers.libvirt.provider:PLUGIN",
}


def available() -> list[str]:
    return sorted(_PLUGINS)


def load(name: str) -> ProviderPlugin:
    try:
        module_name, _, attribute = _PLUGINS[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; available: {', '.join(available())}") from None
    plugin: ProviderPlugin = getattr(importlib.import_module(module_name), attribute)
    return plugin
