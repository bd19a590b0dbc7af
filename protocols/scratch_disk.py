"""The scratch disk of a pod VM (ENABLE_SCRATCH_SPACE): what the providers call the second disk they
attach, and where the pod VM looks for it. Shared so both sides agree on the names."""

from __future__ import annotations

# The disk's name where the cloud lets us choose one the guest can see: the libvirt disk <serial>
# (/dev/disk/by-id/virtio-peerpods-scratch) and the GCP device name (/dev/disk/by-id/google-...).
SCRATCH_DISK_NAME = "peerpods-scratch"
# EC2's block device mapping name; Nitro shows it as an NVMe namespace, not under this name.
AWS_SCRATCH_DEVICE = "/dev/sdf"
# Azure data disk LUN.
AZURE_SCRATCH_LUN = 0
# Written by process-user-data when the adaptor has ENABLE_SCRATCH_SPACE (upstream's path; the same
# as protocols.cloudconfig's, kept here so the boot-time scratch unit does not load YAML).
SCRATCH_SPACE_MARKER = "/run/peerpod/scratch-space.marker"
