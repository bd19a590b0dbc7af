"""Key-value storage with upstream Trustee's backends and namespaces (see `kbs.storage.base`)."""

from kbs.storage.base import (
    AS_POLICY,
    KBS,
    NAMESPACES,
    REFERENCE_VALUE,
    REPOSITORY,
    SESSIONS,
    KeyValueStorage,
    StorageError,
    StorageUnavailable,
)
from kbs.storage.factory import StorageFactory, StorageSettings, storage_type

__all__ = [
    "AS_POLICY",
    "KBS",
    "NAMESPACES",
    "REFERENCE_VALUE",
    "REPOSITORY",
    "SESSIONS",
    "KeyValueStorage",
    "StorageError",
    "StorageFactory",
    "StorageSettings",
    "StorageUnavailable",
    "storage_type",
]
