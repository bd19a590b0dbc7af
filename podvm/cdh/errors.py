"""CDH errors. Their messages are upstream's brief texts, which callers (and kata's tests) match on;
the detail goes to the log, never a key or plaintext."""

from __future__ import annotations


class CdhError(Exception):
    """Base class; `str()` is what the ttRPC status carries after `[CDH] [ERROR]: `."""


class ConfigError(CdhError):
    """A cdh.toml that cannot be used."""


class ResourceError(CdhError):
    """A resource URI that cannot be fetched (not attested, denied, missing, unreachable)."""


class UnwrapError(CdhError):
    """A layer key that cannot be unwrapped."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__("Decrypt Image (UnwrapKey) failed")


class PullError(CdhError):
    """An image pull that failed; the message is image-rs's `PullImageError` text."""

    def __init__(self, message: str, detail: str = "") -> None:
        self.detail = detail
        super().__init__(f"Image Pull error: {message}")


# image-rs texts (image.rs, pull.rs, decrypt.rs, signature/mod.rs).
DECRYPT_LAYER_FAILED = (
    "Errors happened when pulling image: Failed to decrypt layer: "
    "Failed to decrypt the image layer, please ensure that the decryption key is placed and correct"
)
POLICY_REJECTED = "Image policy rejected: Denied by policy: {detail}"
MANIFEST_FAILED = "Failed to pull image manifest"
CREATE_BUNDLE_FAILED = "Failed to create bundle"


class SecureMountError(CdhError):
    """A secure mount that failed; the message is upstream's `Error when mounting Block device: ...`."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Error when mounting Block device: {message}")


class MountRequestError(SecureMountError):
    """A SecureMountRequest that cannot be used as it is (checked before anything is touched)."""


class MountKeyError(SecureMountError):
    """The device's key could not be obtained: nothing was written to the device."""


class DeviceError(SecureMountError):
    """The block device, cryptsetup, mkfs or mount failed."""
