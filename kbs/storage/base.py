"""The key-value storage every KBS store uses (upstream Trustee's `key-value-storage`).

One instance serves one namespace (upstream's instance name: a table in PostgreSQL, a key prefix in
Redis, a directory or file locally). Values are opaque bytes. Beyond upstream's `set` / `get` /
`delete` / `list`, `replace` is a compare-and-set, which a session needs so that a nonce is spent
exactly once whichever replica answers the `/attest`.

Errors: `StorageError` for what retrying cannot fix (a bad key, a bad configuration), its subclass
`StorageUnavailable` for a backend that cannot be reached or failed for now (the KBS answers 503
and the next request tries again).
"""

from __future__ import annotations

import re
from typing import Protocol

KBS = "kbs"
REPOSITORY = "repository"
SESSIONS = "kbs_protocol_session"
AS_POLICY = "attestation_service_policy"
REFERENCE_VALUE = "reference_value"
NAMESPACES = (KBS, REPOSITORY, SESSIONS, AS_POLICY, REFERENCE_VALUE)

# upstream's `is_valid_key`: what keeps a key out of SQL and shell syntax and path tricks
_KEY = re.compile(r"[A-Za-z0-9._/-]+", re.ASCII)
MAX_KEY_CHARS = 1024


class StorageError(Exception):
    """A storage operation was refused (bad key, bad configuration); retrying will not help."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached or failed for now; the same request may succeed later."""


def check_key(key: str) -> str:
    """`key` when it is upstream's alphabet (and not `.`/`..` parts, which no backend may resolve)."""
    if (
        len(key) > MAX_KEY_CHARS
        or not _KEY.fullmatch(key)
        or any(part in ("", ".", "..") for part in key.split("/"))
    ):
        raise StorageError(f"storage key {key[:80]!r} is not 1-{MAX_KEY_CHARS} of [A-Za-z0-9._/-]")
    return key


class KeyValueStorage(Protocol):
    """One namespace of a backend. Every method raises `StorageError` / `StorageUnavailable`."""

    namespace: str

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        """Store `value`; without `overwrite` an existing key is kept. True when `value` was stored."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The value, or None for a missing key."""
        ...

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        """Store `value` only if the key holds exactly `expected` now, atomically against every
        replica; True when it did."""
        ...

    async def delete(self, key: str) -> bytes | None:
        """Remove the key; the value it held, or None when there was none."""
        ...

    async def list(self) -> list[str]:
        """Every key of the namespace (sorted)."""
        ...

    async def close(self) -> None:
        """Release connections (a shared backend is closed by its last namespace)."""
        ...
