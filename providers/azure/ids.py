"""ARM resource ids: parsing them strictly, and building the ids of what the provider creates.

The instance id handed to the adaptor is the VM's full ARM id. Upstream extracts the name with a
loose regular expression and reports any mismatch as "VM name not found" (issue #1847); here a bad id
is rejected with the reason, and an id outside the configured subscription and resource group is
refused, so a delete can never reach a VM this adaptor does not manage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from providers.base import InvalidRequestError

# /subscriptions/{sub}/resourceGroups/{rg}/providers/{namespace}/{type}/{name}[/{child type}/{child name}]...
# Used with fullmatch (`$` would allow a trailing newline); no part holds spaces or control characters.
_PART = r"[^/\x00-\x20\x7f]+"
_ID = re.compile(
    rf"/subscriptions/(?P<sub>{_PART})/resourceGroups/(?P<rg>{_PART})/providers/(?P<ns>{_PART})"
    rf"/(?P<type>{_PART})/(?P<name>{_PART})(?P<children>(?:/{_PART}/{_PART})*)",
    re.IGNORECASE,
)
_COMMUNITY_IMAGE = re.compile(
    rf"/CommunityGalleries/{_PART}/Images/{_PART}(?:/Versions/{_PART})?", re.IGNORECASE
)

VM_TYPE = "Microsoft.Compute/virtualMachines"


@dataclass(frozen=True)
class ResourceId:
    subscription: str
    resource_group: str
    namespace: str
    type: str
    name: str
    children: tuple[tuple[str, str], ...] = ()

    @property
    def full_type(self) -> str:
        return "/".join([self.namespace, self.type, *(kind for kind, _ in self.children)])


def parse_resource_id(text: str) -> ResourceId | None:
    """The parts of an ARM resource id, or None when `text` is not one."""
    match = _ID.fullmatch(text.strip())
    if match is None:
        return None
    parts = match["children"].split("/")[1:]
    children = tuple(zip(parts[::2], parts[1::2], strict=True))
    return ResourceId(match["sub"], match["rg"], match["ns"], match["type"], match["name"], children)


def is_community_image(image: str) -> bool:
    return image.startswith("/CommunityGalleries/")


def check_image_id(image: str) -> str | None:
    """Why `image` is not a usable image id (managed image, gallery image or community image), or None."""
    if is_community_image(image):
        return (
            None if _COMMUNITY_IMAGE.fullmatch(image) else f"malformed community gallery image id {image!r}"
        )
    if parse_resource_id(image) is None:
        return f"{image!r} is neither an ARM resource id nor a /CommunityGalleries/ image id"
    return None


def vm_name_from_id(instance_id: str, subscription: str, resource_group: str) -> str:
    """The VM name in a VM id of our subscription and resource group; InvalidRequestError otherwise."""
    parsed = parse_resource_id(instance_id)
    if parsed is None or parsed.full_type.lower() != VM_TYPE.lower():
        raise InvalidRequestError(
            f"instance id {instance_id!r} is not an Azure VM resource id "
            f"(/subscriptions/<id>/resourceGroups/<group>/providers/{VM_TYPE}/<name>)"
        )
    if (
        parsed.subscription.lower() != subscription.lower()
        or parsed.resource_group.lower() != resource_group.lower()
    ):
        raise InvalidRequestError(
            f"instance id {instance_id!r} is outside subscription {subscription} and resource group "
            f"{resource_group} that this adaptor manages"
        )
    return parsed.name


def resource_id(subscription: str, resource_group: str, full_type: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/{full_type}/{name}"
