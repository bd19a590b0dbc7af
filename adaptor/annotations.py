"""What the Kata shim tells us about a pod in CreateVM's annotations (reference/kata.md §1.3)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from providers.base import InstanceSpec

SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
_HYPERVISOR = "io.katacontainers.config.hypervisor."
MACHINE_TYPE = _HYPERVISOR + "machine_type"
IMAGE = _HYPERVISOR + "image"
DEFAULT_VCPUS = _HYPERVISOR + "default_vcpus"
DEFAULT_MEMORY = _HYPERVISOR + "default_memory"
DEFAULT_GPUS = _HYPERVISOR + "default_gpus"
INIT_DATA = _HYPERVISOR + "cc_init_data"

# Every pattern is used with `fullmatch`: `$` in `match` also accepts a trailing newline.
_CRIO_NAME = re.compile(r"k8s_(?P<pod>[^_]+)_(?P<namespace>[^_]+)_[^_]+_\d+")
_SANDBOX_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
# Kubernetes object names: a pod name is a DNS-1123 subdomain, a namespace a DNS-1123 label.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
_POD_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
_NAMESPACE = re.compile(_DNS_LABEL)
MAX_POD_NAME = 253


class AnnotationError(ValueError):
    """CreateVM lacks something the adaptor needs."""


def count(text: str) -> int:
    """Upstream reads counts leniently: empty or malformed means "not set" (0)."""
    try:
        return max(0, int(text or 0))
    except ValueError:
        return 0


@dataclass(frozen=True)
class PodInfo:
    name: str
    namespace: str
    spec: InstanceSpec
    init_data_toml: str


def check_sandbox_id(sandbox_id: str) -> None:
    """Refuse ids that could escape PODS_DIR or forge log lines; the id becomes a directory name."""
    if not _SANDBOX_ID.fullmatch(sandbox_id):
        raise AnnotationError(f"invalid sandbox id {sandbox_id[:140]!r}")


def pod_info(annotations: Mapping[str, str]) -> PodInfo:
    name = annotations.get(SANDBOX_NAME, "")
    namespace = annotations.get(SANDBOX_NAMESPACE, "")
    if match := _CRIO_NAME.fullmatch(name):
        name, namespace = match["pod"], namespace or match["namespace"]
    if not name:
        raise AnnotationError(f"pod name not found: annotation {SANDBOX_NAME} is missing")
    if not namespace:
        raise AnnotationError(f"pod namespace not found: annotation {SANDBOX_NAMESPACE} is missing")
    # Names go into log lines, instance names and user data: only what Kubernetes itself allows.
    if len(name) > MAX_POD_NAME or not _POD_NAME.fullmatch(name):
        raise AnnotationError(f"pod name {name[:80]!r} is not a valid Kubernetes name")
    if not _NAMESPACE.fullmatch(namespace):
        raise AnnotationError(f"pod namespace {namespace[:80]!r} is not a valid Kubernetes namespace")
    return PodInfo(name, namespace, instance_spec(annotations), annotations.get(INIT_DATA, ""))


def instance_spec(annotations: Mapping[str, str]) -> InstanceSpec:
    """What the pod asks of its VM; annotations the shim leaves empty mean the provider's defaults."""
    return InstanceSpec(
        instance_type=annotations.get(MACHINE_TYPE, ""),
        vcpus=count(annotations.get(DEFAULT_VCPUS, "")),
        memory_mib=count(annotations.get(DEFAULT_MEMORY, "")),
        gpus=count(annotations.get(DEFAULT_GPUS, "")),
        image=annotations.get(IMAGE, ""),
    )


def instance_name(pod_name: str, sandbox_id: str) -> str:
    """`podvm-<pod>-<first 8 of the sandbox id>`, lower-case DNS label, at most 63 characters."""
    suffix = re.sub(r"[^a-z0-9]", "", sandbox_id.lower())[:8]
    pod = re.sub(r"[^a-z0-9-]", "-", pod_name.lower()).strip("-")
    pod = pod[: 63 - len("podvm--") - len(suffix)].strip("-")
    return f"podvm-{pod}-{suffix}" if pod else f"podvm-{suffix}"
