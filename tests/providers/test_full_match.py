"""Validated names and ids are matched whole: a trailing newline (which `$` lets through) is refused."""

from __future__ import annotations

from providers.azure.ids import check_image_id, parse_resource_id

VM_ID = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm"
COMMUNITY_IMAGE = "/CommunityGalleries/g/Images/i/Versions/1.0.0"


def test_azure_community_image_with_a_trailing_newline_is_refused() -> None:
    assert check_image_id(COMMUNITY_IMAGE) is None
    assert (
        check_image_id(COMMUNITY_IMAGE + "\n")
        == f"malformed community gallery image id {COMMUNITY_IMAGE + chr(10)!r}"
    )


def test_azure_resource_ids_are_matched_whole() -> None:
    parsed = parse_resource_id(VM_ID)
    assert parsed is not None and parsed.name == "vm"
    assert parse_resource_id(VM_ID + "/extra") is None
    for bad in ("\n", " ", "\x1b"):
        assert parse_resource_id(VM_ID.replace("/vm", f"/v{bad}m")) is None
