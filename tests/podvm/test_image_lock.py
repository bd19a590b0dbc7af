"""The pod VM image takes its dependency versions and wheel digests from requirements.lock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from podvm.image.errors import ImageBuildError
from podvm.image.pyenv import check_wheel_digests, read_lock

ROOT = Path(__file__).resolve().parents[2]


def test_project_lock_reads_as_pins_with_digests() -> None:
    lock = read_lock((ROOT / "requirements.lock").read_text())
    assert "aiohttp==" in lock.constraints
    assert "--hash" not in lock.constraints
    assert all(len(d) == 64 for digests in lock.digests.values() for d in digests)


def test_pin_without_hash_is_refused() -> None:
    with pytest.raises(ImageBuildError, match="demo without hashes"):
        read_lock("demo==1.0\n    # via nothing\n")


def test_wheel_not_in_lock_is_refused(tmp_path: Path) -> None:
    wheel = tmp_path / "demo_pkg-1.0-py3-none-any.whl"
    wheel.write_bytes(b"wheel bytes")
    good = hashlib.sha256(b"wheel bytes").hexdigest()
    check_wheel_digests(tmp_path, read_lock(f"demo-pkg==1.0 \\\n    --hash=sha256:{good}\n"))
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ImageBuildError, match=r"is not in requirements\.lock"):
        check_wheel_digests(tmp_path, read_lock(f"demo-pkg==1.0 \\\n    --hash=sha256:{other}\n"))
