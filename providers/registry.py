"""Which providers exist, imported lazily so that a cloud's SDK loads only when it is used."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from protocols.extras import import_with_extra
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
    """The provider plugin; MissingExtraError when its cloud SDK is not installed."""
    try:
        module_name, _, attribute = _PLUGINS[name].partition(":")
    except KeyError:
        raise KeyError(f"unknown provider {name!r}; available: {', '.join(available())}") from None
    # Each cloud's SDK comes with the extra of the provider's name (pip install 'peerpods[aws]').
    plugin: ProviderPlugin = getattr(import_with_extra(module_name, extra=name), attribute)
    return plugin
