"""The project inside the image: a wheel of this checkout and its runtime dependencies in a venv.

Dependency versions are constrained to the project's requirements.lock (what scripts/bootstrap
installs and the tests ran against), and every downloaded wheel's SHA-256 must be one the lock
lists, so the image runs the code the tests checked; pip resolves which of them the runtime needs.
The requirements and constraints are part of the cache key, and the wheels' versions go into the
manifest.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from podvm.image.errors import ImageBuildError
from podvm.image.rootfs import chroot, proc_mounted
from podvm.image.runner import Runner

PROJECT = "peerpods"
_SELF = re.compile(rf"^{PROJECT}\[([^\]]*)\]")
_WHEEL_NAME = re.compile(r"^(?P<name>[^-]+)-(?P<version>[^-]+)-")


def runtime_requirements(pyproject_text: str, extras: Sequence[str] = ()) -> list[str]:
    """The project's requirement lines for its base dependencies plus `extras` (self-references such
    as `peerpods[aws]` expanded), in a stable order; unknown extras are an ImageBuildError."""
    project = tomllib.loads(pyproject_text).get("project", {})
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found: list[str] = list(project.get("dependencies", []))
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop(0)
        if extra in seen:
            continue
        seen.add(extra)
        if extra not in optional:
            raise ImageBuildError(f"pyproject.toml has no optional dependency group {extra!r}")
        for line in optional[extra]:
            match = _SELF.match(line.replace(" ", ""))
            if match:
                pending += [name.strip() for name in match.group(1).split(",") if name.strip()]
            elif line not in found:
                found.append(line)
    return found


def wheel_versions(wheel_dir: Path) -> dict[str, str]:
    """Distribution name -> version of the wheels in `wheel_dir` (from their file names)."""
    versions: dict[str, str] = {}
    for wheel in sorted(wheel_dir.glob("*.whl")):
        match = _WHEEL_NAME.match(wheel.name)
        if match:
            versions[match.group("name").lower().replace("_", "-")] = match.group("version")
    return versions


_LOCK_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)")
_LOCK_HASH = re.compile(r"--hash=sha256:(?P<digest>[0-9a-f]{64})")


@dataclass(frozen=True)
class Lock:
    """requirements.lock read as version pins (a pip constraints file) and allowed wheel digests."""

    constraints: str
    digests: dict[str, frozenset[str]]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(lock_text: str) -> Lock:
    """Pins and hashes of a `uv pip compile --generate-hashes` file; a pin without a hash is an
    ImageBuildError (the lock would not protect it)."""
    pins: list[str] = []
    digests: dict[str, set[str]] = {}
    current = ""
    for line in lock_text.splitlines():
        if match := _LOCK_PIN.match(line):
            current = _normalise(match.group("name"))
            pins.append(f"{match.group('name')}=={match.group('version')}")
            digests[current] = set()
        for found in _LOCK_HASH.finditer(line):
            if current:
                digests[current].add(found.group("digest"))
    if unhashed := sorted(name for name, hashes in digests.items() if not hashes):
        raise ImageBuildError(
            f"requirements.lock pins {', '.join(unhashed)} without hashes: run scripts/lock"
        )
    return Lock("".join(f"{pin}\n" for pin in pins), {k: frozenset(v) for k, v in digests.items()})


def check_wheel_digests(wheel_dir: Path, lock: Lock) -> None:
    """Every wheel in `wheel_dir` must be a file the lock lists by its SHA-256."""
    for wheel in sorted(wheel_dir.glob("*.whl")):
        match = _WHEEL_NAME.match(wheel.name)
        name = _normalise(match.group("name")) if match else wheel.name
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        if digest not in lock.digests.get(name, frozenset()):
            raise ImageBuildError(f"{wheel.name}: sha256 {digest} is not in requirements.lock")


def fetch_wheels(runner: Runner, requirements: Sequence[str], lock: Lock, dest: Path) -> None:
    """Binary wheels for `requirements` at the lock's versions, from PyPI into `dest` (no sdists:
    nothing is compiled for the image), each checked against the lock's hashes."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "requirements.txt").write_text("".join(f"{line}\n" for line in requirements))
    (dest / "constraints.txt").write_text(lock.constraints)
    runner.run(
        [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--only-binary=:all:", "--dest", dest,
            "-r", dest / "requirements.txt", "-c", dest / "constraints.txt",
        ]
    )  # fmt: skip
    check_wheel_digests(dest, lock)


def build_project_wheel(runner: Runner, project_root: Path, files: Sequence[str], dest: Path) -> Path:
    """A wheel of exactly `files` (copied out first, so the checkout gets no build/ or egg-info)."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="peerpods-wheel-") as scratch:
        source = Path(scratch) / "src"
        for rel in files:
            target = source / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(project_root / rel, target)
        runner.run(
            [
                sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-build-isolation", "--wheel-dir", dest, source,
            ]
        )  # fmt: skip
    wheels = sorted(dest.glob(f"{PROJECT}-*.whl"))
    if len(wheels) != 1:
        raise ImageBuildError(f"expected one {PROJECT} wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


# Debian's python3 standard library in the image, and its bytecode tag.
STDLIB = "/usr/lib/python3.11"
CACHE_TAG = "cpython-311"
# Read at every start of every command and useless in a pod VM: Debian's sitecustomize (an apport
# hook; apport is not installed, and the file had no bytecode, so each start compiled it) and, in
# the venv, setuptools' distutils shim (a .pth that imports _distutils_hack).
UNUSED_STARTUP_FILES = ("etc/python3.11/sitecustomize.py", "usr/lib/python3.11/sitecustomize.py")
VENV_UNUSED_STARTUP_FILES = ("lib/python3.11/site-packages/distutils-precedence.pth",)
# PEP 552 flags of bytecode that is never checked against its source.
_UNCHECKED_HASH_FLAGS = 0b01


def precompile(runner: Runner, root: Path, directories: Sequence[str]) -> None:
    """Bytecode for every module under `directories` of the image, by the image's own python3, that
    Python need not check against its source: nothing changes after the build, while Debian's and
    pip's defaults under SOURCE_DATE_EPOCH are checked-hash (each import reads and hashes the source,
    at each start of each command)."""
    argv = ["python3", "-m", "compileall", "-q", "-f", "--invalidation-mode", "unchecked-hash"]
    chroot(runner, root, [*argv, *directories])


def unusable_bytecode(root: Path, directories: Sequence[str], cache_tag: str) -> list[str]:
    """Modules under `directories` of the image whose bytecode for `cache_tag` (e.g. cpython-311) is
    missing or would be checked against its source: each would be compiled or hashed at start."""
    found = []
    for directory in directories:
        for source in sorted((root / directory.lstrip("/")).rglob("*.py")):
            pyc = source.parent / "__pycache__" / f"{source.stem}.{cache_tag}.pyc"
            try:
                with pyc.open("rb") as f:
                    header = f.read(8)
            except OSError:
                header = b""
            if len(header) < 8 or int.from_bytes(header[4:8], "little") != _UNCHECKED_HASH_FLAGS:
                found.append("/" + source.relative_to(root).as_posix())
    return found


def install_venv(
    runner: Runner,
    root: Path,
    venv: str,
    wheel_dirs: Sequence[Path],
    project_wheel: Path,
    extras: Sequence[str],
    commands: Sequence[str],
) -> None:
    """Create `venv` in the image with Debian's python3 and install the project offline into it;
    link `commands` (those that exist) into /usr/local/bin."""
    staging = root / "tmp" / "peerpods-wheels"
    staging.mkdir(parents=True, exist_ok=True)
    for wheel in (project_wheel, *(w for directory in wheel_dirs for w in directory.glob("*.whl"))):
        shutil.copy2(wheel, staging / wheel.name)
    spec = f"/tmp/peerpods-wheels/{project_wheel.name}"
    if extras:
        spec = f"{PROJECT}[{','.join(extras)}] @ file://{spec}"
    try:
        with proc_mounted(root, runner):
            chroot(runner, root, ["python3", "-m", "venv", venv])
            chroot(
                runner,
                root,
                [
                    f"{venv}/bin/pip", "install", "--quiet", "--no-index", "--no-cache-dir",
                    "--disable-pip-version-check", "--find-links", "/tmp/peerpods-wheels", spec,
                ],
            )  # fmt: skip
            precompile(runner, root, (venv, STDLIB))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for rel in (*UNUSED_STARTUP_FILES, *(f"{venv.lstrip('/')}/{f}" for f in VENV_UNUSED_STARTUP_FILES)):
        (root / rel).unlink(missing_ok=True)
    bin_dir = root / "usr/local/bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for command in commands:
        if (root / venv.lstrip("/") / "bin" / command).exists():
            link = bin_dir / command
            link.unlink(missing_ok=True)
            link.symlink_to(f"{venv}/bin/{command}")
