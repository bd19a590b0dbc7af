"""The cloud-config user data each pod VM boots with: tunnel TLS material, credentials, initdata.

It is built whole at CreateVM too (and thrown away), so that what the pod VM would refuse, be it
initdata over its limits or user data over its size cap, is refused there with INVALID_ARGUMENT
instead of a pod VM that never answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from adaptor.config import AdaptorConfig
from adaptor.tunnel.authority import KeyPair, TunnelAuthority
from protocols.apf import ForwarderConfig
from protocols.cloudconfig import (
    APF_CONFIG_PATH,
    AUTH_FILE_PATH,
    INITDATA_PATH,
    MAX_USER_DATA_BYTES,
    SCRATCH_SPACE_MARKER_PATH,
    CloudConfigError,
    WriteFile,
    render_cloud_config,
)
from protocols.initdata import initdata_file, initdata_from_toml

POD_NAMESPACE = "/run/netns/podns"


def initdata_for(config: AdaptorConfig, init_data_toml: str) -> str:
    """The pod's own initdata (raw TOML from the annotation) wins over the adaptor-wide default."""
    return initdata_from_toml(init_data_toml) if init_data_toml else config.initdata


def build_user_data(
    config: AdaptorConfig,
    authority: TunnelAuthority,
    server: KeyPair,
    pod_name: str,
    init_data: str,
    pod_network: Mapping[str, Any] | None = None,
) -> bytes:
    """The cloud-config text; InitDataError or CloudConfigError if the pod VM would refuse it."""
    apf = ForwarderConfig(
        # With a custom CA the pod VM's image brings its certificates, as upstream's manual mode.
        tls_server_cert="" if authority.pod_vms_bring_certificates else server.cert_pem,
        tls_server_key="" if authority.pod_vms_bring_certificates else server.key_pem,
        tls_client_ca="" if authority.pod_vms_bring_certificates else authority.client.cert_pem,
        tls_min_version=config.tls_min_version,
        tls_cipher_suites=config.tls_cipher_suites,
        pod_namespace=POD_NAMESPACE,
        pod_name=pod_name,
        pod_network=dict(pod_network or {}),
    )
    files = [WriteFile(APF_CONFIG_PATH, apf.to_json() + "\n")]
    if config.auth_json:
        files.append(WriteFile(AUTH_FILE_PATH, config.auth_json))
    if init_data:
        files.append(WriteFile(INITDATA_PATH, initdata_file(init_data)))
    if config.enable_scratch_space:
        files.append(WriteFile(SCRATCH_SPACE_MARKER_PATH, ""))
    user_data = render_cloud_config(files).encode()
    if len(user_data) > MAX_USER_DATA_BYTES:
        raise CloudConfigError(
            f"user data would be {len(user_data)} bytes; the pod VM accepts at most {MAX_USER_DATA_BYTES}"
        )
    return user_data
