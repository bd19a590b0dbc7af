"""`LocalJson`: a namespace as one JSON file `<file_dir_path>/<namespace>.json`, `{key: base64}`.

Every change is a read-modify-write of the whole file under an advisory lock (`verifier.sharedfile`),
replaced atomically; reads re-read the file only when its stamp changed. For small namespaces
(policies, reference values) shared by replicas on one filesystem; each session write rewrites the
whole file, so sessions belong elsewhere under load.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from kbs.storage.base import StorageError, StorageUnavailable, check_key
from verifier import sharedfile


class LocalJsonStorage:
    def __init__(self, file_dir_path: Path, namespace: str) -> None:
        self.namespace = namespace
        self._path = file_dir_path / f"{namespace}.json"
        self._stamp: sharedfile.Stamp | None = None
        self._items: dict[str, bytes] = {}
        try:
            file_dir_path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use storage directory {file_dir_path}: {exc.strerror}") from None

    def _load(self) -> dict[str, bytes]:
        """The file's content (cached by stamp). Raises OSError, StorageError."""
        try:
            if self._stamp is not None and sharedfile.stamp(self._path) == self._stamp:
                return self._items
            stamp, data = sharedfile.read(self._path)
        except FileNotFoundError:
            self._stamp, self._items = None, {}
            return self._items
        try:
            doc = json.loads(data)
            items = {str(key): base64.b64decode(value, validate=True) for key, value in doc.items()}
        except (ValueError, TypeError, AttributeError, binascii.Error) as exc:
            raise StorageError(
                f"LocalJson {self._path} is not a JSON object of base64 values: {exc}"
            ) from None
        self._stamp, self._items = stamp, items
        return items

    def _save(self, items: dict[str, bytes]) -> None:
        doc = {key: base64.b64encode(value).decode("ascii") for key, value in sorted(items.items())}
        sharedfile.replace(self._path, json.dumps(doc, indent=1).encode("ascii"))
        self._stamp, self._items = sharedfile.stamp(self._path), items

    def _fail(self, doing: str, exc: OSError) -> StorageUnavailable:
        return StorageUnavailable(f"LocalJson {self._path}: cannot {doing}: {exc.strerror}")

    async def _update(
        self, key: str, expected: bytes | None, value: bytes | None, *, check: bool
    ) -> tuple[bool, bytes | None]:
        """Under the lock: when not `check` or the key holds `expected`, store `value` (None
        deletes). Returns whether it changed anything and the previous value."""
        try:
            with sharedfile.locked(self._path):
                items = dict(self._load())
                previous = items.get(key)
                if check and previous != expected:
                    return False, previous
                if value is None:
                    if previous is None:
                        return False, None
                    del items[key]
                else:
                    items[key] = bytes(value)
                self._save(items)
                return True, previous
        except OSError as exc:
            raise self._fail("update", exc) from None

    async def set(self, key: str, value: bytes, *, overwrite: bool = True) -> bool:
        check_key(key)
        if overwrite:
            return (await self._update(key, None, value, check=False))[0]
        return (await self._update(key, None, value, check=True))[0]

    async def get(self, key: str) -> bytes | None:
        try:
            return self._load().get(key)
        except OSError as exc:
            raise self._fail("read", exc) from None

    async def replace(self, key: str, expected: bytes, value: bytes) -> bool:
        return (await self._update(key, expected, value, check=True))[0]

    async def delete(self, key: str) -> bytes | None:
        return (await self._update(key, None, None, check=False))[1]

    async def list(self) -> list[str]:
        try:
            return sorted(self._load())
        except OSError as exc:
            raise self._fail("read", exc) from None

    async def close(self) -> None:
        return None
