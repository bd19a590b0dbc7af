"""Upstream's pod mutation (src/webhook/pkg/mutating), on the pod's JSON, answered as a JSON patch.

For pods of the target runtime class only: the pod VM is sized from the sum of all containers' and
init containers' requests and limits (annotations Kata forwards to CreateVM), then every container's
resources are cleared, so the worker node is charged nothing but one unit of the extended resource
that stands for "one pod VM" (on the first container): the node's capacity of that resource is the
adaptor's PEERPODS_LIMIT_PER_NODE.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from cluster.quantity import QuantityError, mebibytes, parse, render, value

RUNTIME_CLASS_DEFAULT = "kata-remote"
EXTENDED_RESOURCE_DEFAULT = "kata.peerpods.io/vm"
CPU_ANNOTATION = "io.katacontainers.config.hypervisor.default_vcpus"
MEMORY_ANNOTATION = "io.katacontainers.config.hypervisor.default_memory"
GPU_ANNOTATION = "io.katacontainers.config.hypervisor.default_gpus"
GPU_RESOURCE = "nvidia.com/gpu"

JsonPatch = list[dict[str, Any]]


class PodError(ValueError):
    """The object under review is not a pod this webhook can size (the API server is told why)."""


@dataclass(frozen=True)
class MutationSettings:
    """Upstream's environment variables TARGET_RUNTIMECLASS and POD_VM_EXTENDED_RESOURCE."""

    runtime_class: str = RUNTIME_CLASS_DEFAULT
    extended_resource: str = EXTENDED_RESOURCE_DEFAULT

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MutationSettings:
        """Empty counts as unset, as upstream."""
        return cls(
            env.get("TARGET_RUNTIMECLASS") or RUNTIME_CLASS_DEFAULT,
            env.get("POD_VM_EXTENDED_RESOURCE") or EXTENDED_RESOURCE_DEFAULT,
        )


def mutation(pod: Mapping[str, Any], settings: MutationSettings) -> JsonPatch:
    """The JSON patch upstream's mutation amounts to; empty for pods of any other runtime class."""
    spec = _mapping(pod.get("spec"), "spec")
    if spec.get("runtimeClassName") != settings.runtime_class:
        return []
    containers = _containers(spec, "containers")
    init_containers = _containers(spec, "initContainers")
    if not containers:
        raise PodError("the pod has no containers")
    annotations = dict(_sizing(_quantities(containers + init_containers)))
    patch = _annotation_patch(pod, annotations)
    for kind, listed in (("initContainers", init_containers), ("containers", containers)):
        for index, container in enumerate(listed):
            path = f"/spec/{kind}/{index}/resources"
            if kind == "containers" and index == 0:
                one = {settings.extended_resource: "1"}
                patch.append({"op": "add", "path": path, "value": {"requests": one, "limits": dict(one)}})
            elif "resources" in container:
                patch.append({"op": "remove", "path": path})
    return patch


# (kind, resource) pairs the sizing reads, in the order of `_sizing`'s argument
_SUMMED = (("requests", "cpu"), ("limits", "cpu"), ("requests", "memory"), ("limits", "memory"),
           ("requests", GPU_RESOURCE))  # fmt: skip


def _quantities(containers: list[Mapping[str, Any]]) -> tuple[tuple[str, ...], ...]:
    """For each pair of `_SUMMED`, the quantity strings of every container that sets it."""
    found: tuple[list[str], ...] = tuple([] for _ in _SUMMED)
    for container in containers:
        resources = _mapping(container.get("resources"), "resources")
        if not resources:
            continue
        for (kind, resource), texts in zip(_SUMMED, found, strict=True):
            quantities = _mapping(resources.get(kind), f"resources.{kind}")
            if resource in quantities:
                text = quantities[resource]
                if not isinstance(text, str | int | float):
                    raise PodError(f"resources.{kind}.{resource} is not a quantity")
                texts.append(str(text))
    return tuple(tuple(texts) for texts in found)


@functools.lru_cache(maxsize=1024)
def _sizing(quantities: tuple[tuple[str, ...], ...]) -> tuple[tuple[str, str], ...]:
    """Upstream's rule: the limit sum when a request is set and the limit covers it, else the request.

    Cached by the quantity strings: the pods of one workload repeat them, and exact sums of
    fractions are the costliest step of an admission (a burst of 200 replicas sizes once).
    """
    cpu_request, cpu_limit, mem_request, mem_limit, gpu_request = (
        _total(texts, kind, resource) for texts, (kind, resource) in zip(quantities, _SUMMED, strict=True)
    )
    annotations = []
    if cpu := _chosen(cpu_request, cpu_limit):
        annotations.append((CPU_ANNOTATION, str(value(cpu))))
    if memory := _chosen(mem_request, mem_limit):
        annotations.append((MEMORY_ANNOTATION, str(mebibytes(memory))))
    if gpu_request > 0:
        annotations.append((GPU_ANNOTATION, render(gpu_request)))
    return tuple(annotations)


def _chosen(request: Fraction, limit: Fraction) -> Fraction | None:
    if request != 0 and limit >= request:
        return limit
    return request if request > 0 else None


def _total(texts: tuple[str, ...], kind: str, resource: str) -> Fraction:
    total = Fraction(0)
    for text in texts:
        try:
            total += parse(text)
        except QuantityError as exc:
            raise PodError(f"resources.{kind}.{resource}: {exc}") from None
    return total


def _annotation_patch(pod: Mapping[str, Any], wanted: dict[str, str]) -> JsonPatch:
    metadata = _mapping(pod.get("metadata"), "metadata")
    existing = _mapping(metadata.get("annotations"), "metadata.annotations")
    if not wanted:
        return []
    if pod.get("metadata") is None:
        return [{"op": "add", "path": "/metadata", "value": {"annotations": wanted}}]
    if metadata.get("annotations") is None:
        return [{"op": "add", "path": "/metadata/annotations", "value": wanted}]
    return [
        {"op": "add", "path": f"/metadata/annotations/{_escape(key)}", "value": text}
        for key, text in wanted.items()
        if existing.get(key) != text
    ]


def _escape(key: str) -> str:
    """RFC 6901: "~" and "/" in a member name."""
    return key.replace("~", "~0").replace("/", "~1")


def _containers(spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    listed = spec.get(key) or []
    if not isinstance(listed, list) or not all(isinstance(c, dict) for c in listed):
        raise PodError(f"spec.{key} is not a list of containers")
    return listed


def _mapping(node: object, where: str) -> Mapping[str, Any]:
    if node is None:
        return {}
    if not isinstance(node, dict):  # decoded JSON: dict is the only mapping (and a faster check)
        raise PodError(f"{where} is not an object")
    return node
