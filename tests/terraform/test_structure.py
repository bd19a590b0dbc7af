"""Shape of every module: files, parseable HCL, documented variables and outputs, resolvable references."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.terraform.tfmodules import (
    MODULES,
    TERRAFORM_DIR,
    Config,
    example,
    iter_hcl_files,
    load_hcl,
    module,
)

PROVIDER_SOURCES = {
    "aws": ("aws", "hashicorp/aws"),
    "azure": ("azurerm", "hashicorp/azurerm"),
    "gcp": ("google", "hashicorp/google"),
    "libvirt": ("libvirt", "dmacvicar/libvirt"),
}
RESOURCE_PREFIXES = ("aws_", "azurerm_", "google_", "libvirt_")
_RESOURCE_REF = re.compile(r"\b((?:aws|azurerm|google|libvirt)_[a-z0-9_]+)\.([a-z0-9_]+)\b")
_TABLE_ROW = re.compile(r"^\| `([a-z0-9_]+)` \|(.*)\|$")


def _configs() -> list[Config]:
    return [c for name in MODULES for c in (module(name), example(name))]


def _config_id(config: Config) -> str:
    return str(config.path.relative_to(TERRAFORM_DIR))


def _readme_table(readme: str, heading: str) -> dict[str, list[str]]:
    """Rows of the first table under `heading`, by name in backticks: the remaining cells."""
    section = readme.split(f"\n{heading}\n", 1)
    assert len(section) == 2, f"README has no {heading!r} section"
    rows: dict[str, list[str]] = {}
    for line in section[1].split("\n## ", 1)[0].splitlines():
        match = _TABLE_ROW.match(line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def test_every_module_is_listed_in_the_index() -> None:
    index = (TERRAFORM_DIR / "README.md").read_text()
    for name in MODULES:
        assert f"(./{name}/README.md)" in index or f"({name}/README.md)" in index


@pytest.mark.parametrize("name", MODULES)
def test_module_has_its_files(name: str) -> None:
    path = TERRAFORM_DIR / name
    for file in ("main.tf", "variables.tf", "outputs.tf", "versions.tf", "README.md"):
        assert (path / file).is_file(), f"{name}/{file} is missing"
    for file in ("main.tf", "variables.tf", "outputs.tf", "example.tfvars"):
        assert (path / "examples" / "basic" / file).is_file(), f"{name}/examples/basic/{file} is missing"


@pytest.mark.parametrize("path", list(iter_hcl_files()), ids=lambda p: str(p.relative_to(TERRAFORM_DIR)))
def test_every_hcl_file_parses(path: Path) -> None:
    doc = load_hcl(path)
    assert doc, f"{path} parsed to nothing"


@pytest.mark.parametrize("config", _configs(), ids=_config_id)
def test_every_variable_is_typed_and_described(config: Config) -> None:
    assert config.variables, f"{config.path} declares no variables"
    for name, body in config.variables.items():
        assert body.get("type"), f"variable {name!r} has no type"
        description = body.get("description", "")
        assert len(description) > 10 and description.endswith("."), f"variable {name!r}: {description!r}"


@pytest.mark.parametrize("config", _configs(), ids=_config_id)
def test_every_output_is_described(config: Config) -> None:
    assert config.outputs, f"{config.path} declares no outputs"
    for name, body in config.outputs.items():
        assert "value" in body, f"output {name!r} has no value"
        assert body.get("description", "").endswith("."), f"output {name!r} has no description"


@pytest.mark.parametrize("name", MODULES)
def test_validations_refer_only_to_their_own_variable(name: str) -> None:
    """Before Terraform 1.9 a validation condition may not mention other variables."""
    for var, body in module(name).variables.items():
        for rule in body.get("validation", []):
            assert set(re.findall(r"\bvar\.([a-z0-9_]+)", rule["condition"])) == {var}, rule["condition"]
            message = rule["error_message"]  # Terraform 1.0 wants a sentence: capital first, full stop last
            assert message[:1].isupper() and message.endswith("."), message


@pytest.mark.parametrize("name", MODULES)
def test_versions_pin_terraform_and_the_provider(name: str) -> None:
    local_name, source = PROVIDER_SOURCES[name]
    for config in (module(name), example(name)):
        [block] = config.terraform_blocks
        assert block["required_version"] == ">= 1.0"
        assert set(config.required_providers) == {local_name}
        assert config.required_providers[local_name]["source"] == source
    assert (
        module(name).required_providers[local_name]["version"]
        == example(name).required_providers[local_name]["version"]
    )
    assert module(name).files["versions.tf"]["terraform"], "required_providers belongs in versions.tf"


@pytest.mark.parametrize("name", MODULES)
def test_readme_documents_exactly_the_variables_and_outputs(name: str) -> None:
    mod = module(name)
    readme = (mod.path / "README.md").read_text()
    inputs = _readme_table(readme, "## Inputs")
    assert set(inputs) == set(mod.variables)
    for var, (_type, default, _description) in inputs.items():
        assert (default == "required") == ("default" not in mod.variables[var]), var
    assert set(_readme_table(readme, "## Outputs")) == set(mod.outputs)


@pytest.mark.parametrize("name", MODULES)
def test_references_resolve_and_nothing_declared_is_unused(name: str) -> None:
    mod = module(name)
    used_vars = set(re.findall(r"\bvar\.([a-z0-9_]+)", mod.code))
    assert used_vars == set(mod.variables)
    used_locals = set(re.findall(r"\blocal\.([a-z0-9_]+)", mod.code))
    assert used_locals == set(mod.locals)
    declared = {(rtype, rname) for rtype, by_name in mod.resources.items() for rname in by_name}
    referenced = set(_RESOURCE_REF.findall(mod.code))
    assert referenced <= declared, f"undeclared: {referenced - declared}"
    assert all(rtype.startswith(RESOURCE_PREFIXES) for rtype, _ in declared)


@pytest.mark.parametrize("name", MODULES)
def test_example_calls_the_module_with_declared_arguments(name: str) -> None:
    mod, ex = module(name), example(name)
    [(call_name, call)] = ex.module_calls.items()
    assert call["source"] == "../.."
    arguments = set(call) - {"source"}
    assert arguments <= set(mod.variables), f"undeclared arguments: {arguments - set(mod.variables)}"
    required = {var for var, body in mod.variables.items() if "default" not in body}
    assert required <= arguments, f"missing required arguments: {required - arguments}"
    for out in ex.outputs.values():
        for ref in re.findall(rf"\bmodule\.{call_name}\.([a-z0-9_]+)", out["value"]):
            assert ref in mod.outputs, f"example output uses unknown module output {ref!r}"
    assert set(re.findall(r"\bvar\.([a-z0-9_]+)", ex.code)) == set(ex.variables)


@pytest.mark.parametrize("name", MODULES)
def test_example_tfvars_sets_the_required_example_variables(name: str) -> None:
    ex = example(name)
    values = load_hcl(ex.path / "example.tfvars")
    assert set(values) <= set(ex.variables)
    required = {var for var, body in ex.variables.items() if "default" not in body}
    assert required <= set(values)


def test_no_syntax_newer_than_terraform_1_0() -> None:
    newer = re.compile(
        r"\boptional\(|^\s*nullable\s*=|^(moved|import|check|removed)\s*\{|\b(pre|post)condition\b|"
        r"\breplace_triggered_by\b",
        re.MULTILINE,
    )
    for path in iter_hcl_files():
        match = newer.search(path.read_text())
        assert match is None, f"{path}: {match.group(0) if match else ''!r} needs Terraform > 1.0"
