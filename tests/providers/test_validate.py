"""`Provider.validate()`: part of the interface, and what each provider checks against its cloud at start."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import ClientAuthenticationError

from providers.aws import AwsProvider
from providers.azure.provider import AzureProvider
from providers.base import Provider, ProviderError
from providers.gcp import GcpProvider
from providers.local import LocalProvider
from providers.settings import ConfigError
from tests.fakes.gce import FakeCompute
from tests.providers.test_azure import Cloud
from tests.providers.test_azure import cloud as cloud
from tests.providers.test_azure import fake as fake
from tests.providers.test_gcp import plugin_provider

# mypy checks that each class satisfies the protocol, validate() included.
PROVIDERS: list[type[Provider]] = [AwsProvider, AzureProvider, GcpProvider, LocalProvider]


def test_every_provider_implements_validate() -> None:
    assert "validate" in {name for name, _ in inspect.getmembers(Provider)}
    for cls in PROVIDERS:
        assert inspect.iscoroutinefunction(cls.validate), cls


async def test_azure_sizes_missing_from_the_region_are_reported(cloud: Cloud) -> None:
    await cloud.provider().validate()
    provider = cloud.provider(
        AZURE_INSTANCE_SIZE="Standard_DC9as_v9", AZURE_INSTANCE_SIZES="Standard_DC2as_v5,Standard_DC9as_v9"
    )
    with pytest.raises(ConfigError) as caught:
        await provider.validate()
    assert caught.value.problems == [
        "AZURE_INSTANCE_SIZE / AZURE_INSTANCE_SIZES: ['Standard_DC9as_v9'] are not VM sizes "
        f"offered in region {cloud.fake.location}"
    ]


class RefusingCredential:
    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        raise ClientAuthenticationError("AADSTS7000215: Invalid client secret provided.\nTrace ID: 1")


async def test_azure_credentials_that_get_no_token_are_one_line(cloud: Cloud) -> None:
    provider = cloud.provider()
    provider._credential = RefusingCredential()
    with pytest.raises(ConfigError) as caught:
        await provider.validate()
    [problem] = caught.value.problems
    assert problem.startswith("Azure credentials: no token") and problem.endswith("provided. Trace ID: 1")


async def test_gcp_unknown_machine_type_and_image_are_reported_together() -> None:
    with FakeCompute("test-project", ("us-central1-a",)) as gce:
        gce.add_image("podvm", disk_size_gb=12)
        gce.add_network("peerpods")
        gce.add_subnetwork("pods", "us-central1", "10.10.0.0/24", network="peerpods")
        await plugin_provider(gce).validate()
        provider = plugin_provider(gce, GCP_MACHINE_TYPE="n2d-standard-99", PODVM_IMAGE_NAME="missing")
        with pytest.raises(ConfigError) as caught:
            await provider.validate()
    first, second = caught.value.problems
    assert first.startswith("-machine-type / -machine-types") and "n2d-standard-99" in first
    assert second.startswith("-image-name (PODVM_IMAGE_NAME)") and "missing" in second


async def test_local_needs_its_directory_writable(tmp_path: Path) -> None:
    await LocalProvider(tmp_path, "owner-1").validate()
    with pytest.raises(ConfigError, match="is not writable"):
        await LocalProvider(tmp_path / "absent", "owner-1").validate()


async def test_libvirt_connection_checked_again_before_serving() -> None:
    pytest.importorskip("libvirt")
    from providers.libvirt.provider import PLUGIN
    from tests.providers.test_libvirt_provider import plugin_values

    provider = PLUGIN.create(plugin_values(), "caa-1")
    await provider.validate()
    await provider.teardown()
    with pytest.raises(ProviderError, match="libvirt at test:///default"):
        await provider.validate()
