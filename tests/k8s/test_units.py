"""The pure parts: kubeconfig loading, pull secret parsing, capacity, PeerPod names."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import yaml

from adaptor.k8s.link import cluster_link
from adaptor.k8s.node import UNLIMITED, advertised
from adaptor.k8s.pullsecrets import _registries, merge
from cluster.kubeapi import KubeConfig, KubeConfigError
from cluster.peerpod import owner_uid, peerpod_name


def b64(document: object) -> str:
    return base64.b64encode(json.dumps(document).encode()).decode()


def test_limit_semantics() -> None:
    assert advertised(10) == 10
    assert advertised(0) == UNLIMITED  # the chart's "0 = unlimited" (upstream's code advertises 0)
    assert advertised(-1) is None


def test_peerpod_names_are_stable_per_sandbox_and_valid() -> None:
    name = peerpod_name("web", "sandbox-1")
    assert name == peerpod_name("web", "sandbox-1") and name != peerpod_name("web", "sandbox-2")
    assert name.startswith("web-resource-") and len(name) == len("web-resource-") + 5
    assert len(peerpod_name("a" * 253, "s")) == 253
    assert owner_uid({"metadata": {}}) == ""


def test_registries_of_both_secret_types() -> None:
    config = {".dockerconfigjson": b64({"auths": {"r1": {"username": "u", "password": "p"}, "r2": {}}})}
    assert _registries(config) == {"r1": {"auth": base64.b64encode(b"u:p").decode()}}
    legacy = {".dockercfg": b64({"r3": {"auth": "eA==", "email": "x"}})}
    assert _registries(legacy) == {"r3": {"auth": "eA=="}}
    assert _registries({"other": "x"}) == {}
    for bad in ({".dockerconfigjson": "%%%"}, {".dockerconfigjson": b64(["list"])}, {".dockercfg": b64("s")}):
        with pytest.raises(ValueError):
            _registries(bad)


def test_merge_keeps_the_node_wide_file_and_lets_pod_secrets_win() -> None:
    base = json.dumps({"auths": {"a": {"auth": "1"}, "b": {"auth": "2"}}})
    assert json.loads(merge(base, {"b": {"auth": "3"}})) == {
        "auths": {"a": {"auth": "1"}, "b": {"auth": "3"}}
    }
    assert json.loads(merge("", {"c": {"auth": "4"}})) == {"auths": {"c": {"auth": "4"}}}


def test_kubeconfig_with_inline_data_and_files(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text("CA")
    document = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
        "clusters": [
            {"name": "k", "cluster": {"server": "https://10.0.0.1:6443/", "certificate-authority": "ca.crt"}}
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
    }
    (tmp_path / "config").write_text(yaml.safe_dump(document))
    config = KubeConfig.from_file(tmp_path / "config")
    assert (config.server, config.ca_pem, config.token, config.namespace) == (
        "https://10.0.0.1:6443",
        "CA",
        "t",
        "ns",
    )
    assert "t" not in repr(config.client_key_pem)
    document["clusters"][0]["cluster"] = {"server": "https://x", "certificate-authority-data": "!!"}  # type: ignore[index]
    (tmp_path / "config").write_text(yaml.safe_dump(document))
    with pytest.raises(KubeConfigError, match="not base64"):
        KubeConfig.from_file(tmp_path / "config")
    (tmp_path / "config").write_text("current-context: nowhere\n")
    with pytest.raises(KubeConfigError, match="no usable current context"):
        KubeConfig.from_file(tmp_path / "config")


def test_in_cluster_configuration(tmp_path: Path) -> None:
    for name, text in {
        "ca.crt": "CA",
        "namespace": "confidential-containers-system\n",
        "token": "tok",
    }.items():
        (tmp_path / name).write_text(text)
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    config = KubeConfig.in_cluster(tmp_path, env)
    assert config.server == "https://[fd00::1]:443" and config.namespace == "confidential-containers-system"
    assert config.token_file == str(tmp_path / "token")
    with pytest.raises(KubeConfigError, match="not in a cluster"):
        KubeConfig.in_cluster(tmp_path, {})


def test_no_link_outside_a_cluster() -> None:
    assert cluster_link("aws", 10, {}) is None
    assert cluster_link("aws", 10, {"NODE_NAME": "n"}) is None  # no API server configured: said, not fatal
