"""Credentials and SDK clients for the Azure provider.

azure-core's own retry policy is switched off (`retry_total=0`): `CloudCaller` is the one place that
retries, under the shared client-side rate limit. With both layers on, every throttled call would be
retried up to 3 times inside the SDK (sleeping outside our limiter) for each of our attempts, so a
429 storm would multiply the load instead of backing off together, and our limiter would not see the
throttling at all.
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials import TokenCredential
from azure.core.pipeline import PipelineRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy
from azure.mgmt.network import NetworkManagementClient

from providers.azure.config import AzureConfig


def build_credential(config: AzureConfig) -> TokenCredential:
    """Client secret when one is configured, else workload identity (or managed identity) as upstream."""
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    if config.client_secret:
        return ClientSecretCredential(config.tenant_id, config.client_id, config.client_secret)
    # DefaultAzureCredential picks WorkloadIdentityCredential when the AKS webhook has injected
    # AZURE_FEDERATED_TOKEN_FILE, and a managed identity otherwise. Its EnvironmentCredential is left
    # out: the secret was handled above, and it would refuse the AZURE_CLIENT_SECRET="" that
    # upstream's chart puts in peer-pods-secret for workload identity (an empty value means unset).
    options: dict[str, Any] = {
        "exclude_interactive_browser_credential": True,
        "exclude_environment_credential": True,
    }
    if config.client_id:
        options["workload_identity_client_id"] = config.client_id
        options["managed_identity_client_id"] = config.client_id
    if config.tenant_id:
        options["workload_identity_tenant_id"] = config.tenant_id
    return DefaultAzureCredential(**options)


class _LoopbackBearerPolicy(ARMChallengeAuthenticationPolicy):
    """Sends the bearer token over plain http; only used when the endpoint is a loopback address.

    azure-core refuses bearer tokens on non-TLS URLs. The configuration accepts an http endpoint only
    for 127.0.0.0/8 or ::1 (a local fake of ARM in tests), so nothing leaves the machine unencrypted.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context["enforce_https"] = False
        super().on_request(request)


def build_clients(
    config: AzureConfig, credential: TokenCredential, poll_interval_s: float
) -> tuple[ComputeManagementClient, NetworkManagementClient]:
    options: dict[str, Any] = {
        "base_url": config.arm_endpoint,
        "credential_scopes": [config.credential_scope],
        "polling_interval": poll_interval_s,
        "retry_total": 0,
    }
    if config.endpoint_is_loopback_http:
        options["authentication_policy"] = _LoopbackBearerPolicy(credential, config.credential_scope)
    compute = ComputeManagementClient(credential, config.subscription_id, **options)
    network = NetworkManagementClient(credential, config.subscription_id, **options)
    return compute, network
