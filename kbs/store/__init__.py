"""Resource stores: local files, memory, a key-value storage backend, AWS Secrets Manager."""

from kbs.store.base import (
    AsyncResourceStore,
    InvalidResourcePath,
    ResourceNotFound,
    ResourcePath,
    ResourceStore,
    StoreError,
    StoreUnavailable,
)
from kbs.store.fs import FileResourceStore
from kbs.store.kv import KvResourceStore
from kbs.store.memory import MemoryResourceStore
from kbs.store.threaded import ThreadedResourceStore

__all__ = [
    "AsyncResourceStore",
    "FileResourceStore",
    "InvalidResourcePath",
    "KvResourceStore",
    "MemoryResourceStore",
    "ResourceNotFound",
    "ResourcePath",
    "ResourceStore",
    "StoreError",
    "StoreUnavailable",
    "ThreadedResourceStore",
]
