"""Content hashes of a build's inputs: the cache keys.

A key is the SHA-256 of a canonical listing (path, mode, content digest) of the input files plus the
build's settings, so it changes exactly when something that goes into the image changes, and not
when files are merely touched or checked out again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

# What the project wheel is built from; anything else in the clone does not reach the image.
PROJECT_PACKAGES = ("protocols", "adaptor", "providers", "podvm", "kbs", "verifier", "shimdriver")
PROJECT_FILES = ("pyproject.toml", "README.md")
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
_SKIP_SUFFIXES = (".pyc", ".pyo")


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_files(root: Path, top: str) -> list[str]:
    """Relative paths of the regular files under `root/top` (sorted, caches and bytecode skipped)."""
    found: list[str] = []
    for directory, dirs, files in os.walk(root / top):
        dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS and not d.endswith(".egg-info"))
        for name in files:
            path = Path(directory) / name
            if not name.endswith(_SKIP_SUFFIXES) and path.is_file() and not path.is_symlink():
                found.append(path.relative_to(root).as_posix())
    return sorted(found)


def project_files(project_root: Path) -> list[str]:
    """The files the project wheel is built from, relative to the project root."""
    files = [name for name in PROJECT_FILES if (project_root / name).is_file()]
    for package in PROJECT_PACKAGES:
        files += tree_files(project_root, package)
    return sorted(files)


def listing_digest(root: Path, relative_paths: Iterable[str]) -> str:
    """One digest over the files' paths, executable bits and contents."""
    entries = []
    for rel in sorted(relative_paths):
        path = root / rel
        executable = os.access(path, os.X_OK)
        entries.append([rel, executable, file_digest(path)])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def combine(parts: Mapping[str, object]) -> str:
    """A key from named parts (digests, settings); order-independent, JSON-canonical."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
