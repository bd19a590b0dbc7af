"""The pod VM disk image: a Debian bookworm system with this project's pod VM services.

`python -m podvm.image build` makes a UEFI-bootable GPT disk (ESP holding a unified kernel image,
ext4 root) without loop devices, as qcow2 (libvirt) and raw (clouds), with a manifest. See
README.md in this directory.
"""
