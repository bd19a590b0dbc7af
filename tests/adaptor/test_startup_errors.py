"""A `cloud-api-adaptor` that cannot start says why: one line per problem, all together, exit 2, no traceback.

Each case runs the real command with an environment of its own; nothing leaves loopback (the
cloud SDKs' metadata-server probes are pointed at a closed loopback port or switched off).
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1: every probe is refused at once
AZURE_IDS = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers"


def run_adaptor(
    directory: Path, provider: str, env: dict[str, str], *args: str
) -> tuple[int, list[str], str]:
    """Exit status, the ERROR lines, and all of stderr."""
    base = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(directory),
        "PEERPODS_STATE_DIR": str(directory / "state"),
        "REMOTE_HYPERVISOR_ENDPOINT": str(directory / "hypervisor.sock"),
        "PODS_DIR": str(directory / "pods"),
        "PROBE_PORT": "0",
    }
    binary = Path(sys.executable).with_name("cloud-api-adaptor")
    done = subprocess.run(
        [str(binary), provider, *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    return done.returncode, errors, done.stderr


def assert_reported(
    directory: Path, provider: str, env: dict[str, str], expected: list[str], *args: str
) -> None:
    status, errors, stderr = run_adaptor(directory, provider, env, *args)
    assert status == 2, stderr
    assert "Traceback" not in stderr, stderr
    assert len(errors) == len(expected), stderr
    for fragment in expected:
        assert sum(fragment in line for line in errors) == 1, (fragment, errors)


def test_aws_without_credentials_and_a_bad_value(tmp_path: Path) -> None:
    env = {
        "AWS_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "PODVM_AMI_ID": "ami-0123456789abcdef0",
        "PROXY_TIMEOUT": "soon",
    }
    assert_reported(tmp_path, "aws", env, ["PROXY_TIMEOUT: not a duration", "no AWS credentials"])


def test_aws_bad_values_next_to_a_missing_one(tmp_path: Path) -> None:
    env = {"AWS_REGION": "us-east-1", "ROOT_VOLUME_SIZE": "thirty", "VXLAN_PORT": "4789/udp"}
    assert_reported(
        tmp_path,
        "aws",
        env,
        ["ROOT_VOLUME_SIZE: invalid literal", "VXLAN_PORT: invalid literal", "PODVM_AMI_ID is required"],
    )


def test_azure_without_credentials(tmp_path: Path) -> None:
    env = {
        "AZURE_CLIENT_ID": "11111111-1111-1111-1111-111111111111",
        "AZURE_TENANT_ID": "22222222-2222-2222-2222-222222222222",
        "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
        "AZURE_REGION": "eastus",
        "AZURE_RESOURCE_GROUP": "rg",
        "AZURE_SUBNET_ID": f"{AZURE_IDS}/Microsoft.Network/virtualNetworks/v/subnets/s",
        "AZURE_IMAGE_ID": f"{AZURE_IDS}/Microsoft.Compute/images/podvm",
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": CLOSED,  # the managed identity endpoint (IMDS)
    }
    assert_reported(tmp_path, "azure", env, ["Azure credentials: no token"])


def test_gcp_without_credentials_and_a_bad_value(tmp_path: Path) -> None:
    env = {
        "GCP_PROJECT_ID": "project-1",
        "GCP_ZONE": "us-central1-a",
        "GCP_NETWORK": "default",
        "GCP_CONFIDENTIAL_TYPE": "SEV_SNP",
        "NO_GCE_CHECK": "true",  # no metadata server probe
        "GCE_METADATA_HOST": "127.0.0.1:1",
        "PEERPODS_LIMIT_PER_NODE": "ten",
    }
    assert_reported(
        tmp_path,
        "gcp",
        env,
        [
            "PEERPODS_LIMIT_PER_NODE: invalid literal",
            "GCP_CREDENTIALS is empty and no Application Default Credentials",
        ],
    )


def test_unreachable_libvirt_and_a_bad_value(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    env = {"LIBVIRT_URI": f"test://{tmp_path}/no-such-host.xml", "TLS_MIN_VERSION": "VersionTLS10"}
    assert_reported(
        tmp_path, "libvirt", env, ["libvirt: cannot connect to libvirt at test://", "TLS_MIN_VERSION"]
    )


def test_socket_path_taken_by_something_else(tmp_path: Path) -> None:
    (tmp_path / "hypervisor.sock").mkdir()
    env = {"LOCAL_PODVM_DIR": str(tmp_path / "vms"), "LOCAL_PODVM_NETWORK": "loopback"}
    assert_reported(tmp_path, "local", env, ["taken by something that is not a socket"])
    assert (tmp_path / "hypervisor.sock").is_dir()  # left alone


def test_refused_tls_switches_and_unreadable_certificates_together(tmp_path: Path) -> None:
    env = {
        "LOCAL_PODVM_DIR": str(tmp_path / "vms"),
        "LOCAL_PODVM_NETWORK": "loopback",
        "TLS_SKIP_VERIFY": "true",
        "CERT_FILE": str(tmp_path / "client.crt"),
        "CERT_KEY": str(tmp_path / "client.key"),
    }
    assert_reported(
        tmp_path,
        "local",
        env,
        [
            "-disable-tls is refused",
            "TLS_SKIP_VERIFY) is refused",
            "CERT_FILE): cannot read",
            "CERT_KEY): cannot read",
        ],
        "-disable-tls",
    )


def test_probe_port_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        env = {
            "LOCAL_PODVM_DIR": str(tmp_path / "vms"),
            "LOCAL_PODVM_NETWORK": "loopback",
            "PROBE_PORT": str(taken.getsockname()[1]),
        }
        assert_reported(tmp_path, "local", env, ["PROBE_PORT: cannot listen on 127.0.0.1:"])
