"""Resource stores: local files (default), memory, AWS Secrets Manager."""

from kbs.store.base import InvalidResourcePath, ResourceNotFound, ResourcePath, ResourceStore, StoreError
from kbs.store.fs import FileResourceStore
from kbs.store.memory import MemoryResourceStore

__all__ = [
    "FileResourceStore",
    "InvalidResourcePath",
    "MemoryResourceStore",
    "ResourceNotFound",
    "ResourcePath",
    "ResourceStore",
    "StoreError",
]
