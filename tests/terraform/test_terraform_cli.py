"""What the Terraform 1.0.3 binary can check offline: formatting, and the provider-free parts of each module.

`terraform init` cannot fetch the aws/azurerm/google/libvirt providers here, so `validate` never sees the
modules' resources. It does see, and `plan` evaluates, the examples' module calls against the modules'
variable declarations, the variables' validation rules, and the locals that depend on variables only.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.terraform.tfmodules import (
    EXAMPLE,
    MODULES,
    TERRAFORM_DIR,
    Terraform,
    module,
    one_line,
    write_example_harness,
    write_locals_harness,
    write_tfvars_json,
    write_variables_harness,
)

# The smallest valid input for each module: its required variables.
VALID: dict[str, dict[str, Any]] = {
    "aws": {"image_path": "/images/podvm.raw", "image_name": "podvm-0.1.0", "bucket_name": "peerpods-images"},
    "azure": {
        "resource_group_name": "peerpods-rg",
        "location": "eastus",
        "image_path": "/images/podvm.vhd",
        "storage_account_name": "peerpodsimages",
        "image_version": "0.1.0",
        "worker_subnet_prefixes": ["10.224.0.0/16"],
    },
    "gcp": {
        "image_path": "/images/podvm.tar.gz",
        "image_name": "podvm-0-1-0",
        "bucket_name": "peerpods-images",
        "network": "default",
        "worker_network_tag": "peerpods-worker",
    },
    "libvirt": {"image_path": "/images/podvm.qcow2"},
}

# (module, variable, bad value, part of the module's error message)
INVALID: list[tuple[str, str, Any, str]] = [
    ("aws", "image_path", "/images/podvm.qcow2", "must name a raw disk image"),
    ("aws", "image_sha256", "abc", "64 lowercase hex digits"),
    ("aws", "image_name", "x", "3 to 128 characters"),
    ("aws", "bucket_name", "Peerpods_Images", "bucket_name must be 3 to 63"),
    ("aws", "vpc_id", "default", "vpc-0123456789abcdef0"),
    ("aws", "worker_security_group_id", "workers", "sg-0123456789abcdef0"),
    ("aws", "subnet_cidr", "10.0.1.0", "IPv4 CIDR block"),
    ("aws", "forwarder_port", 70000, "forwarder_port must be an integer port"),
    ("aws", "vxlan_port", 0, "vxlan_port must be null or"),
    ("aws", "egress_cidr_blocks", ["0.0.0.0/0", "anywhere"], "egress_cidr_blocks entry"),
    ("aws", "kms_key_arn", "alias/aws/ebs", "KMS key ARN"),
    ("azure", "image_path", "/images/podvm.raw", "must name a .vhd file"),
    ("azure", "image_version", "1.0", "MAJOR.MINOR.PATCH"),
    ("azure", "security_type", "TrustedLaunch", "ConfidentialVmSupported or ConfidentialVM"),
    ("azure", "worker_subnet_prefixes", [], "non-empty list of CIDR blocks"),
    ("azure", "worker_subnet_prefixes", ["VirtualNetwork"], "non-empty list of CIDR blocks"),
    ("azure", "storage_account_name", "peerpods-images", "3 to 24 lowercase letters or digits"),
    ("azure", "location", "East US", "lowercase without spaces"),
    ("azure", "replica_count", 0, "integer from 1 to 100"),
    ("gcp", "image_path", "/images/disk.raw", "must name a .tar.gz file"),
    ("gcp", "image_name", "Podvm_0", "image_name must be 1 to 63"),
    ("gcp", "network", "projects/p/global/networks/default", "must be a network name"),
    ("gcp", "worker_network_tag", "", "worker_network_tag must be 1 to 63"),
    ("gcp", "podvm_network_tags", ["ok", "Not-OK"], "podvm_network_tags entry"),
    ("gcp", "project_id", "p", "project_id must be 6 to 30"),
    ("libvirt", "image_path", "/images/podvm.raw", "must name a .qcow2 file"),
    ("libvirt", "volume_name", "../podvm.qcow2", "plain file name"),
    ("libvirt", "pool_path", "images", "absolute path"),
]


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"{result.args}: {result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def harnesses(terraform: Terraform, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Per module, an initialised root module that holds only its variables (made on first use)."""
    made: dict[str, Path] = {}

    def get(cloud: str) -> Path:
        if cloud not in made:
            path = write_variables_harness(module(cloud), tmp_path_factory.mktemp(f"vars-{cloud}"))
            _ok(terraform.run(path, "init", "-backend=false", "-input=false", "-no-color"))
            made[cloud] = path
        return made[cloud]

    return get


def _plan(terraform: Terraform, path: Path, values: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    tfvars = write_tfvars_json(path / "inputs.tfvars.json", values)
    return terraform.run(path, "plan", "-input=false", "-no-color", "-lock=false", f"-var-file={tfvars}")


def _console(terraform: Terraform, path: Path, values: dict[str, Any], expression: str) -> Any:
    """Evaluate `expression` (over the harness's variables and locals) and return it as Python data."""
    tfvars = write_tfvars_json(path / "inputs.tfvars.json", values)
    result = terraform.run(
        path, "console", "-no-color", f"-var-file={tfvars}", stdin=f"jsonencode({expression})\n"
    )
    # The console prints the JSON text as an HCL string literal, whose escapes are JSON's for this content.
    return json.loads(json.loads(_ok(result)))


def test_fmt_check_passes(terraform: Terraform) -> None:
    result = terraform.run(TERRAFORM_DIR, "fmt", "-check", "-recursive", "-diff", "-no-color")
    assert result.returncode == 0, f"terraform fmt would change:\n{result.stdout}{result.stderr}"


def test_fmt_check_catches_misformatting(terraform: Terraform, tmp_path: Path) -> None:
    """Guards the test above: the same command fails on a file fmt would realign."""
    text = (TERRAFORM_DIR / "libvirt" / "outputs.tf").read_text()
    (tmp_path / "outputs.tf").write_text(text.replace('description = "Name', 'description  =  "Name', 1))
    result = terraform.run(tmp_path, "fmt", "-check", "-recursive", "-no-color")
    assert result.returncode != 0
    assert "outputs.tf" in result.stdout


@pytest.mark.parametrize("cloud", MODULES)
def test_example_module_call_validates_and_plans(terraform: Terraform, tmp_path: Path, cloud: str) -> None:
    path = write_example_harness(module(cloud), tmp_path)
    _ok(terraform.run(path, "init", "-backend=false", "-input=false", "-no-color"))
    assert "The configuration is valid" in _ok(terraform.run(path, "validate", "-no-color"))
    shutil.copy(TERRAFORM_DIR / cloud / EXAMPLE / "example.tfvars", path / "example.tfvars")
    result = terraform.run(
        path, "plan", "-input=false", "-no-color", "-lock=false", "-var-file=example.tfvars"
    )
    assert "No changes" in _ok(result)


@pytest.mark.parametrize("cloud", MODULES)
def test_minimal_inputs_pass_validation(
    terraform: Terraform, harnesses: Callable[[str], Path], cloud: str
) -> None:
    _ok(terraform.run(harnesses(cloud), "validate", "-no-color"))
    _ok(_plan(terraform, harnesses(cloud), VALID[cloud]))


def test_null_vxlan_port_passes_validation(terraform: Terraform, harnesses: Callable[[str], Path]) -> None:
    _ok(_plan(terraform, harnesses("aws"), {**VALID["aws"], "vxlan_port": None}))


@pytest.mark.parametrize(
    ("cloud", "variable", "value", "message"), INVALID, ids=[f"{c}-{v}-{x!r}" for c, v, x, _ in INVALID]
)
def test_validation_rejects(
    terraform: Terraform,
    harnesses: Callable[[str], Path],
    cloud: str,
    variable: str,
    value: Any,
    message: str,
) -> None:
    result = _plan(terraform, harnesses(cloud), {**VALID[cloud], variable: value})
    assert result.returncode != 0
    output = one_line(result.stderr)
    assert "Invalid value for variable" in output
    assert message in output, output


@pytest.mark.parametrize(
    ("security_type", "flags"),
    [
        ("ConfidentialVmSupported", {"supported": True, "enabled": None}),
        ("ConfidentialVM", {"supported": None, "enabled": True}),
    ],
)
def test_azure_security_type_sets_exactly_one_flag(
    terraform: Terraform, tmp_path: Path, security_type: str, flags: dict[str, bool | None]
) -> None:
    path = write_locals_harness(module("azure"), tmp_path)
    _ok(terraform.run(path, "init", "-backend=false", "-input=false", "-no-color"))
    values = {
        **VALID["azure"],
        "security_type": security_type,
        "replication_regions": ["westeurope", "eastus"],
    }
    got = _console(
        terraform,
        path,
        values,
        "{supported = local.confidential_vm_supported, enabled = local.confidential_vm_enabled, "
        "regions = local.target_regions}",
    )
    assert got == {**flags, "regions": ["eastus", "westeurope"]}


@pytest.mark.parametrize(("tags", "targets"), [([], None), (["podvm"], ["podvm"])])
def test_gcp_rules_target_pod_vm_tags_only_when_given(
    terraform: Terraform, tmp_path: Path, tags: list[str], targets: list[str] | None
) -> None:
    path = write_locals_harness(module("gcp"), tmp_path)
    _ok(terraform.run(path, "init", "-backend=false", "-input=false", "-no-color"))
    got = _console(terraform, path, {**VALID["gcp"], "podvm_network_tags": tags}, "local.target_tags")
    assert got == targets
