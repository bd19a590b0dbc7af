"""CreateVM's annotations as the Kata shim sends them (reference/caa.md §1.2): names, resources, ids."""

from __future__ import annotations

import pytest

from adaptor.annotations import (
    DEFAULT_GPUS,
    DEFAULT_MEMORY,
    DEFAULT_VCPUS,
    IMAGE,
    INIT_DATA,
    MACHINE_TYPE,
    SANDBOX_NAME,
    SANDBOX_NAMESPACE,
    AnnotationError,
    check_sandbox_id,
    instance_name,
    pod_info,
)
from providers.base import InstanceSpec
from shimdriver.driver import shim_annotations


def test_what_the_shim_sends_by_default() -> None:
    pod = pod_info(shim_annotations("web", "shop"))
    assert (pod.name, pod.namespace, pod.init_data_toml) == ("web", "shop", "")
    assert pod.spec == InstanceSpec(instance_type="", vcpus=1, memory_mib=2048, gpus=0, image="")


def test_resources_and_overrides_are_read() -> None:
    annotations = shim_annotations(
        "web",
        "shop",
        machine_type="m6a.xlarge",
        image="ami-0123",
        default_vcpus="4",
        default_memory="8192",
        default_gpus="2",
        cc_init_data='algorithm = "sha256"\n',
    )
    pod = pod_info(annotations)
    assert pod.spec == InstanceSpec("m6a.xlarge", vcpus=4, memory_mib=8192, gpus=2, image="ami-0123")
    assert pod.init_data_toml == 'algorithm = "sha256"\n'
    assert {MACHINE_TYPE, IMAGE, DEFAULT_VCPUS, DEFAULT_MEMORY, DEFAULT_GPUS, INIT_DATA} <= set(annotations)


@pytest.mark.parametrize("value", ["", "x", "1.5", "-3", " "])
def test_malformed_counts_mean_not_set(value: str) -> None:
    """Upstream parses these leniently: the provider's default applies, the pod still starts."""
    spec = pod_info(shim_annotations("p", "ns", default_vcpus=value, default_memory=value)).spec
    assert (spec.vcpus, spec.memory_mib) == (0, 0)


def test_absent_resource_annotations_mean_not_set() -> None:
    spec = pod_info({SANDBOX_NAME: "p", SANDBOX_NAMESPACE: "ns"}).spec
    assert spec == InstanceSpec()


def test_crio_sandbox_name_is_split() -> None:
    pod = pod_info({SANDBOX_NAME: "k8s_nginx-7d9f_web_0c1d2e3f-1111-2222-3333-444455556666_0"})
    assert (pod.name, pod.namespace) == ("nginx-7d9f", "web")
    explicit = pod_info({SANDBOX_NAME: "k8s_nginx_web_0c1d2e3f_1", SANDBOX_NAMESPACE: "other"})
    assert (explicit.name, explicit.namespace) == ("nginx", "other")


def test_crio_name_with_a_trailing_newline_is_not_split() -> None:
    with pytest.raises(AnnotationError, match="not a valid Kubernetes name"):
        pod_info({SANDBOX_NAME: "k8s_nginx_web_uid_0\n", SANDBOX_NAMESPACE: "web"})


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({SANDBOX_NAMESPACE: "ns"}, "pod name not found"),
        ({SANDBOX_NAME: "p"}, "pod namespace not found"),
        ({SANDBOX_NAME: "p\n", SANDBOX_NAMESPACE: "ns"}, "not a valid Kubernetes name"),
        ({SANDBOX_NAME: "p\x1b[2J", SANDBOX_NAMESPACE: "ns"}, "not a valid Kubernetes name"),
        ({SANDBOX_NAME: "Web", SANDBOX_NAMESPACE: "ns"}, "not a valid Kubernetes name"),
        ({SANDBOX_NAME: "a" * 254, SANDBOX_NAMESPACE: "ns"}, "not a valid Kubernetes name"),
        ({SANDBOX_NAME: "p", SANDBOX_NAMESPACE: "ns\n"}, "not a valid Kubernetes namespace"),
        ({SANDBOX_NAME: "p", SANDBOX_NAMESPACE: "a.b"}, "not a valid Kubernetes namespace"),
    ],
)
def test_bad_names_are_refused(annotations: dict[str, str], message: str) -> None:
    with pytest.raises(AnnotationError, match=message):
        pod_info(annotations)


def test_longest_kubernetes_names_are_accepted() -> None:
    name = ".".join(["a" * 63] * 3) + "." + "b" * 61
    pod = pod_info({SANDBOX_NAME: name, SANDBOX_NAMESPACE: "n" * 63})
    assert len(pod.name) == 253


@pytest.mark.parametrize("sandbox_id", ["a" * 64, "0f3c", "sb-1.two_3"])
def test_good_sandbox_ids(sandbox_id: str) -> None:
    check_sandbox_id(sandbox_id)


@pytest.mark.parametrize(
    "sandbox_id", ["", "../etc", "abc\n", "abc\r", "ab\x00c", "a\tb", "-a", "a" * 129, "a/b", "ä"]
)
def test_bad_sandbox_ids(sandbox_id: str) -> None:
    with pytest.raises(AnnotationError, match="invalid sandbox id"):
        check_sandbox_id(sandbox_id)


def test_instance_name_is_a_dns_label() -> None:
    assert instance_name("web", "0123456789abcdef") == "podvm-web-01234567"
    long = instance_name("My_Pod." + "x" * 80, "ABCDEF0123")
    assert long.startswith("podvm-my-pod-xx") and long.endswith("-abcdef01") and len(long) == 63
    assert instance_name("---", "ab") == "podvm-ab"
