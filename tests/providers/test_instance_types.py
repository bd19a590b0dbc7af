"""Instance-type selection: upstream's order, allow-list checks and error texts, and capacity fallback."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from providers.base import InstanceSpec, InvalidRequestError
from providers.instance_types import InstanceTypeSpec, fallback_types, select_instance_type

# Deliberately unsorted, as a cloud might return them.
TYPES = [
    InstanceTypeSpec("m6a.xlarge", 4, 16384),
    InstanceTypeSpec("g5.xlarge", 4, 16384, gpus=1),
    InstanceTypeSpec("c6a.large", 2, 4096),
    InstanceTypeSpec("m6a.large", 2, 8192),
    InstanceTypeSpec("g5.12xlarge", 48, 196608, gpus=4),
    InstanceTypeSpec("r6a.large", 2, 16384),
]


def test_no_wishes_gives_the_default() -> None:
    assert select_instance_type(InstanceSpec(), "m6a.large", TYPES) == "m6a.large"


def test_default_is_accepted_even_outside_the_allow_list() -> None:
    # Upstream returns the default without checking it against the list.
    assert select_instance_type(InstanceSpec(), "t3.small", TYPES) == "t3.small"


def test_annotation_wins_over_resources() -> None:
    spec = InstanceSpec(instance_type="r6a.large", vcpus=1, memory_mib=1)
    assert select_instance_type(spec, "m6a.large", TYPES) == "r6a.large"


def test_annotation_outside_the_allow_list_is_rejected_with_upstreams_text() -> None:
    with pytest.raises(InvalidRequestError) as err:
        select_instance_type(InstanceSpec(instance_type="m5.large"), "m6a.large", TYPES)
    assert str(err.value) == (
        'failed to verify instance type: requested instance type ("m5.large") is not part of '
        "supported instance types list"
    )


def test_empty_allow_list_accepts_only_the_default() -> None:
    assert select_instance_type(InstanceSpec(instance_type="m6a.large"), "m6a.large", []) == "m6a.large"
    with pytest.raises(InvalidRequestError) as err:
        select_instance_type(InstanceSpec(instance_type="m5.large"), "m6a.large", [])
    assert str(err.value) == (
        'failed to verify instance type: requested instance type ("m5.large") is not default '
        '("m6a.large") and supported instance types list is empty'
    )


def test_best_fit_is_the_smallest_non_gpu_type_that_fits() -> None:
    assert select_instance_type(InstanceSpec(vcpus=2, memory_mib=4096), "x", TYPES) == "c6a.large"
    assert select_instance_type(InstanceSpec(vcpus=2, memory_mib=5000), "x", TYPES) == "m6a.large"
    # Sorted by memory before vCPUs: r6a.large (16 GiB, 2 vCPU) comes before m6a.xlarge (16 GiB, 4).
    assert select_instance_type(InstanceSpec(vcpus=2, memory_mib=16384), "x", TYPES) == "r6a.large"
    assert select_instance_type(InstanceSpec(vcpus=3, memory_mib=16384), "x", TYPES) == "m6a.xlarge"


def test_best_fit_needs_both_vcpus_and_memory() -> None:
    assert select_instance_type(InstanceSpec(vcpus=4), "m6a.large", TYPES) == "m6a.large"
    assert select_instance_type(InstanceSpec(memory_mib=16384), "m6a.large", TYPES) == "m6a.large"


def test_best_fit_never_picks_a_gpu_type() -> None:
    with pytest.raises(InvalidRequestError) as err:
        select_instance_type(InstanceSpec(vcpus=8, memory_mib=1024), "x", TYPES)
    assert str(err.value) == (
        "failed to get instance type based on vCPU and memory annotations: no instance type found "
        "for the given vcpus (8) and memory (1024)"
    )


def test_gpus_select_the_smallest_gpu_type_that_fits() -> None:
    assert select_instance_type(InstanceSpec(gpus=1), "x", TYPES) == "g5.xlarge"
    assert select_instance_type(InstanceSpec(gpus=2), "x", TYPES) == "g5.12xlarge"
    assert select_instance_type(InstanceSpec(gpus=1, vcpus=8, memory_mib=1), "x", TYPES) == "g5.12xlarge"
    with pytest.raises(InvalidRequestError) as err:
        select_instance_type(InstanceSpec(gpus=8, vcpus=1, memory_mib=2), "x", TYPES)
    assert str(err.value) == (
        "failed to get instance type based on GPU, vCPU, and memory annotations: no instance type "
        "found for the given GPUs (8), vCPUs (1), and memory (2)"
    )


def test_empty_allow_list_searches_the_default_spec() -> None:
    default = InstanceTypeSpec("m6a.large", 2, 8192)
    fits = InstanceSpec(vcpus=2, memory_mib=8192)
    too_big = InstanceSpec(vcpus=4, memory_mib=8192)
    assert select_instance_type(fits, "m6a.large", [], default_spec=default) == "m6a.large"
    with pytest.raises(InvalidRequestError, match=r"vcpus \(4\) and memory \(8192\)"):
        select_instance_type(too_big, "m6a.large", [], default_spec=default)


def test_non_monotonic_list_still_finds_the_first_fit() -> None:
    # More memory but fewer vCPUs in the middle: a binary search could skip over index 0.
    specs = [InstanceTypeSpec("a", 8, 4096), InstanceTypeSpec("b", 2, 8192), InstanceTypeSpec("c", 4, 16384)]
    assert select_instance_type(InstanceSpec(vcpus=4, memory_mib=4096), "a", specs) == "a"
    assert select_instance_type(InstanceSpec(vcpus=4, memory_mib=5000), "a", specs) == "c"


spec_strategy = st.builds(
    InstanceTypeSpec,
    name=st.text(alphabet="abcdefgh", min_size=1, max_size=3),
    vcpus=st.integers(1, 64),
    memory_mib=st.integers(512, 65536),
    gpus=st.integers(0, 2),
)


@given(
    specs=st.lists(spec_strategy, min_size=1, max_size=8, unique_by=lambda s: s.name),
    vcpus=st.integers(1, 64),
    memory=st.integers(1, 65536),
)
def test_best_fit_is_minimal_in_sort_order(specs: list[InstanceTypeSpec], vcpus: int, memory: int) -> None:
    fitting = sorted(
        (s for s in specs if s.gpus == 0 and s.vcpus >= vcpus and s.memory_mib >= memory),
        key=lambda s: (s.gpus, s.memory_mib, s.vcpus),
    )
    spec = InstanceSpec(vcpus=vcpus, memory_mib=memory)
    if not fitting:
        with pytest.raises(InvalidRequestError):
            select_instance_type(spec, specs[0].name, specs)
        return
    chosen = select_instance_type(spec, specs[0].name, specs)
    chosen_spec = next(s for s in specs if s.name == chosen)
    assert (chosen_spec.memory_mib, chosen_spec.vcpus) == (fitting[0].memory_mib, fitting[0].vcpus)


def test_fallback_keeps_an_explicit_type_alone() -> None:
    assert fallback_types("m6a.large", InstanceSpec(instance_type="m6a.large"), TYPES) == ["m6a.large"]


def test_fallback_for_a_resource_request_offers_fitting_types_smallest_first() -> None:
    spec = InstanceSpec(vcpus=2, memory_mib=4096)
    assert fallback_types("c6a.large", spec, TYPES) == ["c6a.large", "m6a.large", "r6a.large", "m6a.xlarge"]


def test_fallback_for_a_default_pod_never_goes_below_the_default() -> None:
    assert fallback_types("m6a.large", InstanceSpec(), TYPES) == ["m6a.large", "r6a.large", "m6a.xlarge"]


def test_fallback_for_an_unknown_default_has_no_alternative() -> None:
    assert fallback_types("t3.small", InstanceSpec(), TYPES) == ["t3.small"]


def test_fallback_for_gpu_pods_offers_only_gpu_types() -> None:
    assert fallback_types("g5.xlarge", InstanceSpec(gpus=1), TYPES) == ["g5.xlarge", "g5.12xlarge"]
