"""The dependency declarations hold: what the product imports is declared, what is declared is used,
the lock pins everything pyproject asks for (with hashes), and a missing extra is named clearly."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from podvm.image.pyenv import read_lock

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("protocols", "adaptor", "providers", "podvm", "kbs", "verifier", "shimdriver", "cluster")
RUNTIME_EXTRAS = ("aws", "azure", "gcp", "libvirt", "attestation", "kbs")
# Declared for what they bring besides an import: build and code-generation tools.
NOT_IMPORTED = {"setuptools", "grpcio-tools", "mypy-protobuf", "uv"}

PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def requirements(groups: tuple[str, ...] | None = None) -> list[Requirement]:
    """Base dependencies plus the named extras (all when None), self-references left out."""
    extras: dict[str, list[str]] = PROJECT["optional-dependencies"]
    lines = list(PROJECT["dependencies"])
    for name in extras if groups is None else groups:
        lines += extras[name]
    return [req for req in map(Requirement, lines) if canonicalize_name(req.name) != "peerpods"]


def third_party_imports() -> dict[str, str]:
    """Top-level module -> one file of the product that imports it (stdlib and own packages left out)."""
    found: dict[str, str] = {}
    for package in PRODUCT:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                for name in names:
                    top = name.partition(".")[0]
                    if top not in sys.stdlib_module_names and top not in PRODUCT and top != "tests":
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared() -> None:
    declared = {canonicalize_name(req.name) for req in requirements(("dev", *RUNTIME_EXTRAS))}
    providers = packages_distributions()
    undeclared = {
        module: where
        for module, where in third_party_imports().items()
        if not {canonicalize_name(d) for d in providers.get(module, [])} & declared
        and module != "mypy_boto3_ec2"  # type stubs, imported under TYPE_CHECKING only
    }
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_every_declared_runtime_package_is_imported() -> None:
    imported = {
        canonicalize_name(dist)
        for module in third_party_imports()
        for dist in packages_distributions().get(module, [])
    }
    unused = {
        req.name
        for req in requirements(("dev", *RUNTIME_EXTRAS))
        if canonicalize_name(req.name) not in imported | NOT_IMPORTED
    }
    assert not unused, f"declared but imported by no product code: {sorted(unused)}"


def test_lock_pins_every_requirement_with_hashes() -> None:
    # read_lock (the pod VM image's reader) refuses a pin without hashes.
    lock = read_lock((ROOT / "requirements.lock").read_text())
    pins = {
        canonicalize_name(name): version
        for name, version in (p.split("==") for p in lock.constraints.split())
    }
    stale = [
        str(req)
        for req in requirements()
        if (req.marker is None or req.marker.evaluate({"extra": ""}))
        and (
            canonicalize_name(req.name) not in pins
            or not req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True)
        )
    ]
    assert not stale, f"requirements.lock does not satisfy {stale}: run scripts/lock"
    assert set(lock.digests) == set(pins)


def test_rego_engine_pinned_exactly() -> None:
    (rego,) = [req for req in requirements() if canonicalize_name(req.name) == "gordon-to-regorus"]
    assert [spec.operator for spec in rego.specifier] == ["=="]


@pytest.mark.parametrize(
    ("blocked", "command", "extra"),
    [
        ("regorus", "from kbs.entry import kbs as main", "kbs"),
        ("grpc", "from verifier.entry import attestation_service as main", "attestation"),
        ("boto3", "from adaptor.cli import main", "aws"),
    ],
)
def test_missing_extra_is_named_in_one_line(blocked: str, command: str, extra: str) -> None:
    """A command whose extra is not installed exits 2 with one line saying what to install."""
    argv = ["aws", "-socket", "/nonexistent/x.sock"] if extra == "aws" else ["--help"]
    script = f"import sys; sys.modules[{blocked!r}] = None; {command}; sys.argv = ['prog', *{argv!r}]; main()"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"pip install 'peerpods[{extra}]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
