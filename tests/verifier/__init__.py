"""Verifier tests. Real-hardware vectors come from $PEERPODS_VECTORS, else `<repo>/../shared/vectors`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def vectors_dir(subdir: str) -> Path:
    """The vector folder `subdir` (e.g. "snp"), or skip the test with the reason it is missing."""
    base = Path(os.environ.get("PEERPODS_VECTORS") or REPO_ROOT / ".." / "shared" / "vectors")
    folder = base / subdir
    if not folder.is_dir():
        pytest.skip(f"real-hardware vectors not found at {folder} (set PEERPODS_VECTORS to their folder)")
    return folder
