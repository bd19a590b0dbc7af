"""Acceptance: upstream's DaemonSet starts `cloud-api-adaptor` unchanged for aws, azure, gcp and libvirt.

The environment is what the DaemonSet gives its container (kubernetes.md §2-3): `envFrom` the
provider's `peer-pods-secret` and `peer-pods-cm` — every key of upstream's chart values file
uncommented with its documented default, "" included, and the keys a user must set —, plus
NODE_NAME and POD_UID. The command line is what upstream's entrypoint.sh execs:
`cloud-api-adaptor <provider>` (libvirt: `-data-dir /opt/data-dir`).

Only these are added for the test, none of them an upstream key the user would write: the state
directory (ours), the cloud endpoints of the local fakes, the managed identity standing in for the
node's (Azure), PROBE_PORT on a free port, and NOTIFY_SOCKET (systemd's readiness protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.chaos.moto_server import moto_server
from tests.fakes.arm import FakeArm
from tests.fakes.gce import FakeCompute
from tests.fakes.identity import FakeManagedIdentity

# Keys every provider's values file lists (chart providers/<p>.yaml at fbdde756), with their defaults.
COMMON_CM = {
    "CACERT_FILE": "", "CERT_FILE": "", "CERT_KEY": "", "CLOUD_CONFIG_VERIFY": "false",
    "ENABLE_SCRATCH_SPACE": "false", "EXTERNAL_NETWORK_VIA_PODVM": "false", "FORWARDER_PORT": "",
    "INITDATA": "", "PAUSE_IMAGE": "", "PEERPODS_LIMIT_PER_NODE": "10", "POD_SUBNET_CIDRS": "",
    "PROXY_TIMEOUT": "", "TLS_CIPHER_SUITES": "", "TLS_MIN_VERSION": "", "TLS_SKIP_VERIFY": "false",
    "TUNNEL_TYPE": "", "VXLAN_PORT": "",
}  # fmt: skip
PROVIDER_CM = {
    "aws": {
        "AWS_REGION": "", "AWS_SG_IDS": "", "AWS_SUBNET_ID": "", "DISABLECVM": "false", "PODVM_AMI_ID": "",
        "PODVM_INSTANCE_TYPE": "m6a.large", "PODVM_INSTANCE_TYPES": "", "PODVM_LAUNCHTEMPLATE_NAME": "kata",
        "ROOT_VOLUME_SIZE": "30", "SSH_KP_NAME": "", "TAGS": "", "USE_PODVM_LAUNCHTEMPLATE": "false",
        "USE_PUBLIC_IP": "false",
    },
    "azure": {
        "AZURE_IMAGE_ID": "", "AZURE_INSTANCE_SIZE": "Standard_DC2as_v5", "AZURE_INSTANCE_SIZES": "",
        "AZURE_NSG_ID": "", "AZURE_REGION": "", "AZURE_RESOURCE_GROUP": "", "AZURE_SUBNET_ID": "",
        "AZURE_SUBSCRIPTION_ID": "", "DISABLECVM": "false", "ENABLE_SECURE_BOOT": "false",
        "ROOT_VOLUME_SIZE": "0", "SSH_USERNAME": "peerpod", "TAGS": "", "USE_PUBLIC_IP": "false",
    },
    "gcp": {
        "DISABLECVM": "false", "GCP_CONFIDENTIAL_TYPE": "", "GCP_DISK_TYPE": "pd-standard",
        "GCP_INSTANCE_TYPES": "", "GCP_MACHINE_TYPE": "e2-medium", "GCP_NETWORK": "", "GCP_PROJECT_ID": "",
        "GCP_SUBNETWORK": "", "GCP_ZONE": "", "PODVM_IMAGE_NAME": "", "ROOT_VOLUME_SIZE": "10", "TAGS": "",
        "USE_PUBLIC_IP": "false",
    },
    "libvirt": {
        "DISABLECVM": "true", "LIBVIRT_CPU": "2", "LIBVIRT_CPUSET": "",
        "LIBVIRT_EFI_FIRMWARE": "/usr/share/OVMF/OVMF_CODE_4M.fd", "LIBVIRT_LAUNCH_SECURITY": "",
        "LIBVIRT_MEMORY": "8192", "LIBVIRT_NET": "default", "LIBVIRT_POOL": "default",
        "LIBVIRT_ROOT_DISK_SIZE": "10", "LIBVIRT_URI": "qemu+ssh://root@192.168.122.1/system?no_verify=1",
        "LIBVIRT_VOL_NAME": "podvm-base.qcow2",
    },
}  # fmt: skip
# What entrypoint.sh execs after `cloud-api-adaptor <provider>`.
ENTRYPOINT_ARGS = {"aws": [], "azure": [], "gcp": [], "libvirt": ["-data-dir", "/opt/data-dir"]}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def daemonset_environment(
    provider: str, directory: Path, user_cm: dict[str, str], secret: dict[str, str], for_test: dict[str, str]
) -> dict[str, str]:
    cm = {
        "CLOUD_PROVIDER": provider,
        **COMMON_CM,
        **PROVIDER_CM[provider],
        "REMOTE_HYPERVISOR_ENDPOINT": str(directory / "hypervisor.sock"),
        "PODS_DIR": str(directory / "pods"),
        **user_cm,
    }
    assert set(user_cm) <= set(PROVIDER_CM[provider]), "only keys of upstream's values file"
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(directory),
        "NODE_NAME": "worker-0",
        "POD_UID": str(uuid.uuid4()),
        **secret,
        **cm,
        "PEERPODS_STATE_DIR": str(directory / "state"),
        "PROBE_PORT": str(free_port()),
        "NOTIFY_SOCKET": str(directory / "notify"),
        **for_test,
    }


async def runs_as_daemonset(provider: str, env: dict[str, str], directory: Path) -> str:
    """Start it as the DaemonSet does; return its log once it is ready, probed and stopped."""
    log_path = directory / "adaptor.log"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(env["NOTIFY_SOCKET"])
        notify.setblocking(False)
        binary = Path(sys.executable).with_name("cloud-api-adaptor")
        with log_path.open("wb") as log:
            process = await asyncio.create_subprocess_exec(
                str(binary), provider, *ENTRYPOINT_ARGS[provider],
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
            )  # fmt: skip
        try:
            ready = asyncio.ensure_future(asyncio.get_running_loop().sock_recv(notify, 64))
            exited = asyncio.ensure_future(process.wait())
            done, _ = await asyncio.wait({ready, exited}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
            assert ready in done, f"not ready (exit {process.returncode}):\n{log_path.read_text()}"
            assert ready.result() == b"READY=1"
            exited.cancel()
            url = f"http://127.0.0.1:{env['PROBE_PORT']}/startup"  # the DaemonSet's startupProbe
            status = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).status)
            assert status == 200
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 60)
    assert process.returncode == 0, log_path.read_text()
    return log_path.read_text()


def assert_clean_start(log: str) -> None:
    for sign in ("Traceback", "unrecognized arguments", "unknown flag", " ERROR ", " WARNING "):
        assert sign not in log, log
    assert "serving" in log


@pytest.fixture(scope="module")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


async def test_aws(moto_url: str, tmp_path: Path) -> None:
    ec2 = boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=moto_url,
        aws_access_key_id="k",
        aws_secret_access_key="k",
    )
    image = ec2.register_image(Name="podvm", BootMode="uefi")["ImageId"]
    env = daemonset_environment(
        "aws",
        tmp_path,
        {"AWS_REGION": "us-east-1", "PODVM_AMI_ID": image},
        {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": ""},
        {
            "AWS_ENDPOINT_URL": moto_url,
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_EC2_METADATA_DISABLED": "true",
        },
    )
    assert_clean_start(await runs_as_daemonset("aws", env, tmp_path))


async def test_azure(tmp_path: Path) -> None:
    with FakeArm() as arm, FakeManagedIdentity() as identity:
        user_cm = {
            "AZURE_IMAGE_ID": arm.add_image(),
            "AZURE_REGION": arm.location,
            "AZURE_RESOURCE_GROUP": arm.resource_group,
            "AZURE_SUBNET_ID": arm.add_subnet(),
            "AZURE_SUBSCRIPTION_ID": arm.subscription_id,
        }
        # The chart's secret renders every key; an empty client secret means "use the workload's identity".
        secret = {
            "AZURE_CLIENT_ID": str(uuid.uuid4()),
            "AZURE_CLIENT_SECRET": "",
            "AZURE_TENANT_ID": str(uuid.uuid4()),
        }
        for_test = {"AZURE_ARM_ENDPOINT": arm.base_url, **identity.environment}
        env = daemonset_environment("azure", tmp_path, user_cm, secret, for_test)
        assert_clean_start(await runs_as_daemonset("azure", env, tmp_path))
        assert identity.requests >= 1


def service_account_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "test-project",
            "private_key_id": "0" * 40,
            "private_key": pem,
            "client_email": "caa@test-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


async def test_gcp(tmp_path: Path) -> None:
    with FakeCompute("test-project", ("us-central1-a",)) as gce:
        gce.add_image("podvm", disk_size_gb=10)
        gce.add_network("peerpods")
        user_cm = {
            "GCP_CONFIDENTIAL_TYPE": "SEV_SNP",
            "GCP_MACHINE_TYPE": "n2d-standard-2",
            "GCP_NETWORK": "peerpods",
            "GCP_PROJECT_ID": "test-project",
            "GCP_ZONE": "us-central1-a",
            "PODVM_IMAGE_NAME": "podvm",
        }
        secret = {"GCP_CREDENTIALS": service_account_key()}
        env = daemonset_environment("gcp", tmp_path, user_cm, secret, {"GCP_API_ENDPOINT": gce.endpoint})
        assert_clean_start(await runs_as_daemonset("gcp", env, tmp_path))


async def test_libvirt(tmp_path: Path) -> None:
    pytest.importorskip("libvirt")
    # libvirt's test driver: its storage pool is called default-pool.
    user_cm = {"LIBVIRT_URI": "test:///default", "LIBVIRT_POOL": "default-pool"}
    env = daemonset_environment("libvirt", tmp_path, user_cm, {}, {})
    assert_clean_start(await runs_as_daemonset("libvirt", env, tmp_path))
