"""The settings that make each published image bootable as a confidential VM, and the outputs that feed
cloud-api-adaptor, checked against what our own adaptor and providers read."""

from __future__ import annotations

import re

import pytest

import adaptor.config
import providers.aws.config
import providers.azure.config
import providers.gcp.config
import providers.libvirt.config
from providers.settings import Setting
from tests.terraform.tfmodules import FORWARDER_PORT, MODULES, module

SETTINGS: dict[str, list[Setting]] = {
    "aws": providers.aws.config.SETTINGS,
    "azure": providers.azure.config.SETTINGS,
    "gcp": providers.gcp.config.SETTINGS,
    "libvirt": providers.libvirt.config.SETTINGS,
}
# The output that carries the image reference, and the adaptor setting it is for.
IMAGE_OUTPUTS = {
    "aws": ("ami_id", "PODVM_AMI_ID"),
    "azure": ("image_id", "AZURE_IMAGE_ID"),
    "gcp": ("image_name", "PODVM_IMAGE_NAME"),
    "libvirt": ("volume_name", "LIBVIRT_VOL_NAME"),
}


def _setting(cloud: str, env: str) -> Setting:
    [setting] = [s for s in SETTINGS[cloud] if s.env == env]
    return setting


def _caa_env(cloud: str) -> dict[str, str]:
    """caa_env's entries, by name: expression text (the output is a map literal or a merge of them)."""
    value = module(cloud).outputs["caa_env"]["value"]
    if isinstance(value, dict):
        return {key: str(expr).removeprefix("${").removesuffix("}") for key, expr in value.items()}
    return dict(re.findall(r"\b([A-Z][A-Z0-9_]+) = ([a-z][a-z0-9_.\[\]]+)", value))


def test_aws_ami_boots_uefi_with_a_tpm_for_sev_snp() -> None:
    mod = module("aws")
    ami = mod.resource("aws_ami", "podvm")
    assert ami["boot_mode"] == "uefi"
    assert ami["tpm_support"] == "v2.0"
    assert ami["ena_support"] is True
    assert ami["virtualization_type"] == "hvm"
    assert ami["architecture"] == "x86_64"
    assert ami["imds_support"] == "v2.0"
    [root] = ami["ebs_block_device"]
    assert root["device_name"] == ami["root_device_name"] == "${var.root_device_name}"
    assert root["snapshot_id"] == "${aws_ebs_snapshot_import.podvm.id}"
    assert mod.default("root_device_name") == "/dev/xvda"


def test_aws_snapshot_is_imported_raw_from_the_uploaded_object() -> None:
    mod = module("aws")
    snapshot = mod.resource("aws_ebs_snapshot_import", "podvm")
    [container] = snapshot["disk_container"]
    assert container["format"] == "RAW"
    [bucket] = container["user_bucket"]
    assert bucket == {"s3_bucket": "${aws_s3_object.image.bucket}", "s3_key": "${aws_s3_object.image.key}"}
    assert snapshot["role_name"] == "${local.role_name}"
    assert "${aws_iam_role_policy.vmimport}" in snapshot["depends_on"]
    assert mod.resource("aws_s3_object", "image")["source"] == "${var.image_path}"


def test_aws_vmimport_role_is_the_one_vm_import_assumes() -> None:
    mod = module("aws")
    trust = mod.resource("aws_iam_role", "vmimport")["assume_role_policy"]
    assert 'Service = "vmie.amazonaws.com"' in trust
    assert '"sts:Externalid" = "vmimport"' in trust
    assert mod.default("vmimport_role_name") == "vmimport"
    policy = mod.resource("aws_iam_role_policy", "vmimport")["policy"]
    for action in ("s3:GetObject", "s3:ListBucket", "ec2:RegisterImage", "ec2:ModifySnapshotAttribute"):
        assert f'"{action}"' in policy
    public = mod.resource("aws_s3_bucket_public_access_block", "images")
    assert all(public[key] is True for key in public if key != "bucket")


def test_azure_image_definition_is_gen2_with_a_confidential_security_type() -> None:
    mod = module("azure")
    image = mod.resource("azurerm_shared_image", "podvm")
    assert image["hyper_v_generation"] == "V2"
    assert image["os_type"] == "Linux"
    assert image["confidential_vm_supported"] == "${local.confidential_vm_supported}"
    assert image["confidential_vm_enabled"] == "${local.confidential_vm_enabled}"
    # Each flag is true for its security type and unset (null) otherwise: the provider forbids setting both.
    assert mod.locals["confidential_vm_supported"] == (
        '${var.security_type == "ConfidentialVmSupported" ? true : null}'
    )
    assert mod.locals["confidential_vm_enabled"] == '${var.security_type == "ConfidentialVM" ? true : null}'
    assert mod.default("security_type") == "ConfidentialVmSupported"
    [rule] = mod.variables["security_type"]["validation"]
    assert (
        rule["condition"] == '${contains(["ConfidentialVmSupported", "ConfidentialVM"], var.security_type)}'
    )


def test_azure_image_version_is_built_from_the_page_blob() -> None:
    mod = module("azure")
    version = mod.resource("azurerm_shared_image_version", "podvm")
    assert version["blob_uri"] == "${azurerm_storage_blob.image.url}"
    assert version["storage_account_id"] == "${azurerm_storage_account.images.id}"
    assert version["image_name"] == "${azurerm_shared_image.podvm.name}"
    blob = mod.resource("azurerm_storage_blob", "image")
    assert blob["type"] == "Page"
    assert blob["source"] == "${var.image_path}"
    assert mod.resource("azurerm_storage_container", "images")["container_access_type"] == "private"


def test_gcp_image_declares_every_confidential_guest_os_feature() -> None:
    mod = module("gcp")
    image = mod.resource("google_compute_image", "podvm")
    features = [block["type"] for block in image["guest_os_features"]]
    assert sorted(features) == sorted(
        ["SEV_SNP_CAPABLE", "TDX_CAPABLE", "UEFI_COMPATIBLE", "GVNIC", "SEV_CAPABLE"]
    )
    [raw] = image["raw_disk"]
    assert raw["source"] == (
        "https://storage.googleapis.com/${google_storage_bucket.images.name}/"
        "${google_storage_bucket_object.image.name}"
    )
    assert mod.resource("google_storage_bucket_object", "image")["name"].endswith(".tar.gz")
    bucket = mod.resource("google_storage_bucket", "images")
    assert bucket["public_access_prevention"] == "enforced"
    assert bucket["uniform_bucket_level_access"] is True


def test_gcp_confidential_types_match_the_adaptor() -> None:
    """Every GCP_CONFIDENTIAL_TYPE the adaptor accepts has its capability feature on the image."""
    image = module("gcp").resource("google_compute_image", "podvm")
    features = {block["type"] for block in image["guest_os_features"]}
    for kind in providers.gcp.config.CONFIDENTIAL_TYPES:
        assert f"{kind}_CAPABLE" in features


def test_libvirt_volume_is_the_adaptors_qcow2_base_volume() -> None:
    mod = module("libvirt")
    volume = mod.resource("libvirt_volume", "podvm")
    assert volume["format"] == "qcow2"
    assert volume["source"] == "${var.image_path}"
    assert volume["pool"] == "${local.pool_name}"
    assert mod.default("volume_name") == _setting("libvirt", "LIBVIRT_VOL_NAME").default
    assert mod.default("pool_name") == _setting("libvirt", "LIBVIRT_POOL").default
    [pool] = mod.resource("libvirt_pool", "podvm")["target"]
    assert pool["path"] == "${var.pool_path}"


@pytest.mark.parametrize("cloud", MODULES)
def test_caa_env_uses_settings_the_adaptor_reads(cloud: str) -> None:
    env = _caa_env(cloud)
    known = {s.env for s in SETTINGS[cloud] if s.env}
    assert env, "caa_env is empty"
    assert set(env) <= known, f"not adaptor settings: {set(env) - known}"


@pytest.mark.parametrize("cloud", MODULES)
def test_image_output_is_the_documented_adaptor_setting(cloud: str) -> None:
    mod = module(cloud)
    output, env = IMAGE_OUTPUTS[cloud]
    assert env in mod.outputs[output]["description"]
    assert _caa_env(cloud)[env] == mod.outputs[output]["value"].removeprefix("${").removesuffix("}")
    readme = (mod.path / "README.md").read_text()
    assert f"| `{output}` | `{env}`" in readme


@pytest.mark.parametrize("cloud", ["aws", "azure", "gcp"])
def test_forwarder_port_default_is_the_adaptors(cloud: str) -> None:
    assert module(cloud).default("forwarder_port") == FORWARDER_PORT
    [setting] = [s for s in adaptor.config.SETTINGS if s.env == "FORWARDER_PORT"]
    assert setting.default == FORWARDER_PORT
