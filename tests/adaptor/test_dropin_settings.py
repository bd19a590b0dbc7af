"""Upstream's common cloud-api-adaptor flags and variables: all accepted, checked, never silently ignored."""

from __future__ import annotations

import pytest

from adaptor.cli import parser
from adaptor.config import SETTINGS, AdaptorConfig
from protocols.tunnel_tls import CIPHER_SUITES
from providers.settings import ConfigError, resolve

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
    named = ["PAUSE_IMAGE", "PEERPODS_LIMIT_PER_NODE=20", "VXLAN_PORT=8472", "-host-interface=ens4",
             "EXTERNAL_NETWORK_VIA_PODVM=True", "POD_SUBNET_CIDRS=10.244.0.0/16",
             "-vxlan-min-id=1000"]  # fmt: skip
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
    for needle in ("TUNNEL_TYPE", "VXLAN_PORT", "'nonsense' is not a CIDR", "VersionTLS13", "FORWARDER_PORT",
                   "PROXY_TIMEOUT", "-vxlan-min-id", "-host-interface"):  # fmt: skip
        assert sum(needle in problem for problem in found) == 1, (needle, found)
    assert len(found) == 8


def test_cipher_suites_take_upstreams_iana_names_only() -> None:
    assert problems({"TLS_CIPHER_SUITES": "ECDHE-RSA-AES128-GCM-SHA256"}) == [
        "TLS_MIN_VERSION / TLS_CIPHER_SUITES: unsupported cipher suites ECDHE-RSA-AES128-GCM-SHA256; "
        "use IANA names among " + ", ".join(CIPHER_SUITES)
    ]
    assert problems({"TLS_CIPHER_SUITES": "TLS_RSA_WITH_AES_128_CBC_SHA"})  # no forward secrecy: refused
