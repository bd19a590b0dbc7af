"""Google Compute Engine provider (`cloud-api-adaptor gcp`): confidential VMs via google-cloud-compute."""

from providers.gcp.provider import PLUGIN, GcpProvider

__all__ = ["PLUGIN", "GcpProvider"]
