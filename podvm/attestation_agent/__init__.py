"""The pod VM's attestation agent: TEE evidence (configfs-tsm, /dev/sev-guest, Azure vTPM, sample),
RCAR against the KBS with the pod's init data, and the local REST API workloads call."""
