"""The EBS scratch volume of a pod VM (ENABLE_SCRATCH_SPACE): one more block device mapping in
RunInstances, deleted with the instance, tagged with it (TagSpecifications cover volumes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocols.scratch_disk import AWS_SCRATCH_DEVICE

if TYPE_CHECKING:
    from mypy_boto3_ec2.type_defs import BlockDeviceMappingTypeDef


def scratch_mapping(gib: int) -> BlockDeviceMappingTypeDef:
    return {
        "DeviceName": AWS_SCRATCH_DEVICE,
        "Ebs": {"VolumeSize": gib, "VolumeType": "gp3", "DeleteOnTermination": True},
    }
