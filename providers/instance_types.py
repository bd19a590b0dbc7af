"""Instance-type selection shared by the clouds, with upstream cloud-api-adaptor's rules and error texts.

Upstream order: the pod's `machine_type` annotation wins; else, when GPUs are asked for, the smallest
type with enough GPUs, vCPUs and memory; else, when both vCPUs and memory are asked for, the smallest
type without GPUs that has enough of both; else the default type. The result is then checked against
the allow-list. "Smallest" is the first match in the list sorted by (GPUs, memory, vCPUs).

Upstream binary-searches that sorted list; the fit predicate is not monotonic over it (a type with more
memory may have fewer vCPUs), so a binary search can miss a fitting type. We scan linearly, which gives
the same answer whenever upstream finds the first fit and finds one whenever one exists.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from providers.base import InstanceSpec, InvalidRequestError


@dataclass(frozen=True)
class InstanceTypeSpec:
    """An instance type's size, as the cloud describes it."""

    name: str
    vcpus: int
    memory_mib: int
    gpus: int = 0


def _sort_key(spec: InstanceTypeSpec) -> tuple[int, int, int]:
    return (spec.gpus, spec.memory_mib, spec.vcpus)


def _fits(candidate: InstanceTypeSpec, vcpus: int, memory_mib: int, gpus: int) -> bool:
    return candidate.vcpus >= vcpus and candidate.memory_mib >= memory_mib and candidate.gpus >= gpus


def _first_fit(
    specs: Sequence[InstanceTypeSpec], vcpus: int, memory_mib: int, gpus: int
) -> InstanceTypeSpec | None:
    return next((s for s in sorted(specs, key=_sort_key) if _fits(s, vcpus, memory_mib, gpus)), None)


def _quote(text: str) -> str:
    """Go's %q for the plain names involved, so error texts match upstream's."""
    return json.dumps(text)


def _verify(selected: str, default: str, allowed: Sequence[InstanceTypeSpec]) -> str:
    """Upstream's allow-list check: nothing chosen means the default, which is always accepted."""
    if not selected:
        return default
    names = {spec.name for spec in allowed}
    if not names and selected != default:
        raise InvalidRequestError(
            f"failed to verify instance type: requested instance type ({_quote(selected)}) is not default "
            f"({_quote(default)}) and supported instance types list is empty"
        )
    if names and selected not in names:
        raise InvalidRequestError(
            f"failed to verify instance type: requested instance type ({_quote(selected)}) is not part of "
            "supported instance types list"
        )
    return selected


def select_instance_type(
    spec: InstanceSpec,
    default: str,
    allowed: Sequence[InstanceTypeSpec],
    *,
    default_spec: InstanceTypeSpec | None = None,
) -> str:
    """The instance type for this pod, or InvalidRequestError with upstream's reason.

    `allowed` holds the specs of the allow-list (`*_INSTANCE_TYPES`). When that list is empty upstream
    searches the default type's spec alone: pass it as `default_spec` to get the same behaviour (a pod
    asking for more than the default then fails instead of silently getting a smaller VM).
    """
    candidates: Sequence[InstanceTypeSpec] = allowed
    if not allowed and default_spec is not None:
        candidates = [default_spec]
    selected = ""
    if spec.instance_type:
        selected = spec.instance_type
    elif spec.gpus > 0:
        found = _first_fit(candidates, spec.vcpus, spec.memory_mib, spec.gpus)
        if found is None:
            raise InvalidRequestError(
                "failed to get instance type based on GPU, vCPU, and memory annotations: no instance "
                f"type found for the given GPUs ({spec.gpus}), vCPUs ({spec.vcpus}), "
                f"and memory ({spec.memory_mib})"
            )
        selected = found.name
    elif spec.vcpus != 0 and spec.memory_mib != 0:
        found = _first_fit([c for c in candidates if c.gpus == 0], spec.vcpus, spec.memory_mib, 0)
        if found is None:
            raise InvalidRequestError(
                "failed to get instance type based on vCPU and memory annotations: no instance type found "
                f"for the given vcpus ({spec.vcpus}) and memory ({spec.memory_mib})"
            )
        selected = found.name
    return _verify(selected, default, allowed)


def fallback_types(selected: str, spec: InstanceSpec, allowed: Sequence[InstanceTypeSpec]) -> list[str]:
    """The types to try in order when the cloud has no capacity: `selected` first, then the alternatives.

    An alternative is another allowed type that still covers what the pod asked for, smallest first.
    When the pod asked for nothing, it must be at least as big as `selected` (the operator's default
    size is the floor). A pod that named its type (`machine_type`) gets that type or nothing, and GPU
    types are never offered to a pod that asked for no GPU.
    """
    if spec.instance_type:
        return [selected]
    if spec.vcpus or spec.memory_mib or spec.gpus:
        need = (spec.vcpus, spec.memory_mib, spec.gpus)
    else:
        chosen = next((s for s in allowed if s.name == selected), None)
        if chosen is None:
            return [selected]
        need = (chosen.vcpus, chosen.memory_mib, chosen.gpus)
    vcpus, memory_mib, gpus = need
    others = [
        s.name
        for s in sorted(allowed, key=_sort_key)
        if s.name != selected and _fits(s, vcpus, memory_mib, gpus) and (gpus > 0 or s.gpus == 0)
    ]
    return [selected, *others]
