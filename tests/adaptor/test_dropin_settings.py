"""Upstream's common cloud-api-adaptor flags and variables: all accepted, checked, never silently ignored."""

from __future__ import annotations

import argparse
import logging

import pytest

from adaptor.cli import main, parser
from adaptor.config import SETTINGS, AdaptorConfig
from protocols.tunnel_tls import CIPHER_SUITES
from providers import registry
from providers.base import Provider
from providers.settings import ConfigError, add_arguments, resolve

# src/cloud-api-adaptor/cmd/cloud-api-adaptor/main.go at fbdde756: flag -> env (None: flag only)
UPSTREAM_COMMON = {
    "socket": "REMOTE_HYPERVISOR_ENDPOINT",
    "pods-dir": "PODS_DIR",
    "pause-image": "PAUSE_IMAGE",
    "forwarder-port": "FORWARDER_PORT",
    "ca-cert-file": "CACERT_FILE",
    "cert-file": "CERT_FILE",
    "cert-key": "CERT_KEY",
    "tls-skip-verify": "TLS_SKIP_VERIFY",
    "tls-min-version": "TLS_MIN_VERSION",
    "tls-cipher-suites": "TLS_CIPHER_SUITES",
    "proxy-timeout": "PROXY_TIMEOUT",
    "tunnel-type": "TUNNEL_TYPE",
    "vxlan-port": "VXLAN_PORT",
    "initdata": "INITDATA",
    "cloud-config-verify": "CLOUD_CONFIG_VERIFY",
    "peerpods-limit-per-node": "PEERPODS_LIMIT_PER_NODE",
    "enable-scratch-space": "ENABLE_SCRATCH_SPACE",
    "ext-network-via-podvm": "EXTERNAL_NETWORK_VIA_PODVM",
    "pod-subnet-cidrs": "POD_SUBNET_CIDRS",
    "disable-tls": None,
    "host-interface": None,
    "vxlan-min-id": None,
}
BASE = {"PEERPODS_STATE_DIR": "/tmp/unused-state"}


def config(environ: dict[str, str], argv: list[str] | None = None) -> AdaptorConfig:
    args = parser("local").parse_args(["local", *(argv or [])])
    return AdaptorConfig.from_values(resolve(SETTINGS, args, {**BASE, **environ}))


def problems(environ: dict[str, str], argv: list[str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config(environ, argv)
    return caught.value.problems


def test_all_22_upstream_flags_keep_their_names_and_variables() -> None:
    ours = {setting.flag: setting.env for setting in SETTINGS}
    assert len(UPSTREAM_COMMON) == 22
    assert {flag: ours.get(flag, "missing") for flag in UPSTREAM_COMMON} == UPSTREAM_COMMON


def test_upstream_defaults_start_with_nothing_to_report() -> None:
    defaults = config({})
    assert defaults.forwarder_port == 15150 and defaults.proxy_timeout_s == 300
    assert defaults.pod_network.vxlan_port == 4789 and defaults.pod_network.vxlan_min_id == 555000
    assert defaults.peerpods_limit_per_node == 10
    assert defaults.not_implemented() == []


def test_single_dash_go_style_flags_parse() -> None:
    values = config(
        {},
        ["-pause-image", "registry.k8s.io/pause:3.9", "-vxlan-min-id", "600000", "-host-interface=ens4",
         "-cloud-config-verify", "-tls-cipher-suites", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
         "-disable-tls=false", "-peerpods-limit-per-node", "5"],
    )  # fmt: skip
    assert values.pause_image == "registry.k8s.io/pause:3.9"
    assert values.pod_network.vxlan_min_id == 600000 and values.pod_network.host_interface == "ens4"
    assert values.tls_cipher_suites == ("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",)


def test_empty_variables_mean_unset_as_upstream() -> None:
    # peer-pods-cm often carries keys with "" (the chart's values file lists them so).
    empty = {env: "" for env in UPSTREAM_COMMON.values() if env}
    assert config(empty) == config({})


def test_values_without_effect_are_said_one_line_each() -> None:
    notes = config(
        {"PAUSE_IMAGE": "pause:3.9", "PEERPODS_LIMIT_PER_NODE": "20", "VXLAN_PORT": "8472",
         "EXTERNAL_NETWORK_VIA_PODVM": "true", "POD_SUBNET_CIDRS": "10.244.0.0/16"},
        ["-host-interface", "ens4", "-vxlan-min-id", "1000"],
    ).not_implemented()  # fmt: skip
    # The pod network settings take effect (adaptor.podnetwork), but the experimental external one.
    named = ["PAUSE_IMAGE", "EXTERNAL_NETWORK_VIA_PODVM=True"]
    assert len(notes) == len(named)
    for name in named:
        assert sum(name in note for note in notes) == 1, (name, notes)
    assert all("\n" not in note for note in notes)


def test_switches_that_would_remove_the_tunnels_protection_are_refused() -> None:
    found = problems({"TLS_SKIP_VERIFY": "true"}, ["-disable-tls"])
    assert len(found) == 2
    assert found[0].startswith("-disable-tls is refused")
    assert found[1].startswith("-tls-skip-verify (TLS_SKIP_VERIFY) is refused")
    assert config({"TLS_SKIP_VERIFY": "false"}, ["-disable-tls=false"]).not_implemented() == []


def test_bad_values_are_all_reported_together() -> None:
    found = problems(
        {"TUNNEL_TYPE": "routing", "VXLAN_PORT": "70000", "POD_SUBNET_CIDRS": "10.0.0.0/8,nonsense",
         "TLS_MIN_VERSION": "VersionTLS13", "TLS_CIPHER_SUITES": "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
         "FORWARDER_PORT": "0", "PROXY_TIMEOUT": "soon"},
        ["-vxlan-min-id", "0", "-host-interface", "eth0/1"],
    )  # fmt: skip
    needles = (
        'TUNNEL_TYPE: unknown tunnel type: "routing"',
        "VXLAN_PORT",
        "'nonsense' is not an IPv4 CIDR",
        "VersionTLS13",
        "FORWARDER_PORT",
        "PROXY_TIMEOUT",
        "-vxlan-min-id",
        "-host-interface",
    )
    for needle in needles:
        assert sum(needle in problem for problem in found) == 1, (needle, found)
    assert len(found) == 8


def test_cipher_suites_take_upstreams_iana_names_only() -> None:
    assert problems({"TLS_CIPHER_SUITES": "ECDHE-RSA-AES128-GCM-SHA256"}) == [
        "TLS_MIN_VERSION / TLS_CIPHER_SUITES: unsupported cipher suites ECDHE-RSA-AES128-GCM-SHA256; "
        "use IANA names among " + ", ".join(CIPHER_SUITES)
    ]
    assert problems({"TLS_CIPHER_SUITES": "TLS_RSA_WITH_AES_128_CBC_SHA"})  # no forward secrecy: refused


# Each provider's flags in upstream's src/cloud-providers/<p>/manager.go at fbdde756: flag -> env.
UPSTREAM_PROVIDERS: dict[str, dict[str, str | None]] = {
    "aws": {
        "aws-access-key-id": "AWS_ACCESS_KEY_ID", "aws-secret-key": "AWS_SECRET_ACCESS_KEY",
        "aws-session-token": "AWS_SESSION_TOKEN", "aws-profile": None, "aws-region": "AWS_REGION",
        "instance-type": "PODVM_INSTANCE_TYPE", "instance-types": "PODVM_INSTANCE_TYPES",
        "imageid": "PODVM_AMI_ID",
        "keyname": "SSH_KP_NAME", "subnetid": "AWS_SUBNET_ID", "securitygroupids": "AWS_SG_IDS",
        "use-lt": "USE_PODVM_LAUNCHTEMPLATE", "aws-lt-name": "PODVM_LAUNCHTEMPLATE_NAME",
        "use-public-ip": "USE_PUBLIC_IP", "root-volume-size": "ROOT_VOLUME_SIZE", "disable-cvm": "DISABLECVM",
        "tags": "TAGS",
    },
    "azure": {
        "clientid": "AZURE_CLIENT_ID", "secret": "AZURE_CLIENT_SECRET", "tenantid": "AZURE_TENANT_ID",
        "subscriptionid": "AZURE_SUBSCRIPTION_ID", "region": "AZURE_REGION",
        "resourcegroup": "AZURE_RESOURCE_GROUP",
        "instance-size": "AZURE_INSTANCE_SIZE", "instance-sizes": "AZURE_INSTANCE_SIZES", "zone": None,
        "subnetid": "AZURE_SUBNET_ID", "securitygroupid": "AZURE_NSG_ID", "imageid": "AZURE_IMAGE_ID",
        "ssh-key-path": None, "ssh-username": "SSH_USERNAME", "disable-cvm": "DISABLECVM",
        "enable-secure-boot": "ENABLE_SECURE_BOOT", "use-public-ip": "USE_PUBLIC_IP",
        "root-volume-size": "ROOT_VOLUME_SIZE", "tags": "TAGS",
    },
    "gcp": {
        "gcp-credentials": "GCP_CREDENTIALS", "gcp-project-id": "GCP_PROJECT_ID", "zone": "GCP_ZONE",
        "image-name": "PODVM_IMAGE_NAME", "machine-type": "GCP_MACHINE_TYPE",
        "machine-types": "GCP_INSTANCE_TYPES",
        "network": "GCP_NETWORK", "subnetwork": "GCP_SUBNETWORK", "disk-type": "GCP_DISK_TYPE",
        "disable-cvm": "DISABLECVM", "confidential-type": "GCP_CONFIDENTIAL_TYPE",
        "root-volume-size": "ROOT_VOLUME_SIZE", "use-public-ip": "USE_PUBLIC_IP", "tags": "TAGS",
    },
    "libvirt": {
        "uri": "LIBVIRT_URI", "pool-name": "LIBVIRT_POOL", "network-name": "LIBVIRT_NET",
        "vol-name": "LIBVIRT_VOL_NAME", "launch-security": "LIBVIRT_LAUNCH_SECURITY",
        "firmware": "LIBVIRT_EFI_FIRMWARE", "cpu": "LIBVIRT_CPU", "memory": "LIBVIRT_MEMORY",
        "cpuset": "LIBVIRT_CPUSET", "root-disk-size": "LIBVIRT_ROOT_DISK_SIZE", "data-dir": None,
        "disable-cvm": "DISABLECVM",
    },
}  # fmt: skip


@pytest.mark.parametrize("provider", sorted(UPSTREAM_PROVIDERS))
def test_every_upstream_provider_flag_keeps_its_name_and_variable(provider: str) -> None:
    if provider == "libvirt":
        pytest.importorskip("libvirt")
    ours = {setting.flag: setting.env for setting in registry.load(provider).settings}
    upstream = UPSTREAM_PROVIDERS[provider]
    assert {flag: ours.get(flag, "missing") for flag in upstream} == upstream


def test_azure_zone_is_accepted_and_said_to_have_no_effect(caplog: pytest.LogCaptureFixture) -> None:
    plugin = registry.load("azure")
    command = argparse.ArgumentParser()
    add_arguments(command, plugin.settings)
    ids = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers"
    environ = {
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000", "AZURE_REGION": "eastus",
        "AZURE_RESOURCE_GROUP": "rg",
        "AZURE_SUBNET_ID": f"{ids}/Microsoft.Network/virtualNetworks/v/subnets/s",
        "AZURE_IMAGE_ID": f"{ids}/Microsoft.Compute/images/podvm", "AZURE_CLIENT_ID": "id",
        "AZURE_TENANT_ID": "tenant", "AZURE_CLIENT_SECRET": "secret",
    }  # fmt: skip
    values = resolve(plugin.settings, command.parse_args(["-zone", "2"]), environ)
    with caplog.at_level(logging.WARNING):
        provider = plugin.create(values, "owner-1")
    assert [r.getMessage() for r in caplog.records] == [
        "-zone has no effect, as upstream: Azure chooses the availability zone"
    ]
    assert isinstance(provider, Provider)


def test_help_word_as_upstream(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["help"])
    assert done.value.code == 0
    assert "aws" in capsys.readouterr().out
