"""The KBS chart as installed: its Deployment's container and its post-install Job, run from the
rendered manifests (`tests.k8s.podrun`) against PostgreSQL; the Job's resources are then served to
a guest through the KBS protocol (attestation by kbs-client with the sample TEE)."""

from __future__ import annotations

import base64
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from cluster.kubeapi import Json
from tests.k8s.cluster import free_port
from tests.k8s.podrun import Container, Objects
from tests.k8s.test_charts import KBS, render

RELEASE = "peerpods"  # test_charts.render's release name
RESOURCES = {"default/key/wrapping": b"\x00wrapping key\xff", "tenant/cert/ca": b"-----BEGIN CERT-----\n"}
START_SECONDS = 60


def user_secrets(admin: ed25519.Ed25519PrivateKey) -> list[Json]:
    """What the operator creates before `helm install`: the admin private key and the resources."""
    private = admin.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )

    def secret(name: str, data: dict[str, bytes]) -> Json:
        encoded = {key: base64.b64encode(value).decode() for key, value in data.items()}
        return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded}

    return [
        secret("kbs-admin-key", {"private.key": private}),
        secret("tenant-keys", {"wrapping.key": RESOURCES["default/key/wrapping"]}),
        secret("tenant-certs", {"ca.pem": RESOURCES["tenant/cert/ca"]}),
    ]


def kbs_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("kbs-client")
    return subprocess.run(
        [str(binary), "--url", f"http://127.0.0.1:{port}", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def wait_healthy(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the KBS exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise AssertionError(f"the KBS did not become healthy:\n{log.read_text()[-3000:]}")


def test_resource_job_loads_resources_into_a_running_kbs(
    helm: Path, postgres_url: str, tmp_path: Path
) -> None:
    admin = ed25519.Ed25519PrivateKey.generate()
    public = admin.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    port = free_port()
    values = {
        "replicas": 1,
        "storage": {"type": "Postgres", "url": postgres_url},
        "admin": {"publicKey": public.decode()},
        "service": {"port": port},
        "adminPrivateKeySecret": "kbs-admin-key",
        "kbsResources": [
            {"path": "default/key/wrapping", "secretName": "tenant-keys", "key": "wrapping.key"},
            {"path": "tenant/cert/ca", "secretName": "tenant-certs", "key": "ca.pem"},
        ],
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    rendered = render(helm, KBS, "--values", str(tmp_path / "values.yaml"))
    config = next(o for o in rendered if o["kind"] == "ConfigMap")
    # No Service here: the KBS listens on the Service's port itself, on loopback.
    toml = config["data"]["kbs-config.toml"]
    assert 'sockets = ["0.0.0.0:8080"]' in toml
    config["data"]["kbs-config.toml"] = toml.replace("0.0.0.0:8080", f"127.0.0.1:{port}")
    objects = Objects.of([*rendered, *user_secrets(admin)])
    (deployment,) = (o for o in rendered if o["kind"] == "Deployment")
    (job,) = (o for o in rendered if o["kind"] == "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"

    kbs = Container.of(deployment["spec"]["template"]["spec"], objects, "kbs")
    log = tmp_path / "kbs.log"
    process = kbs.start(tmp_path / "kbs", {}, log)
    try:
        wait_healthy(port, process, log)
        key_file = tmp_path / "admin.key"
        key_file.write_bytes(objects.key("Secret", "kbs-admin-key", "private.key"))
        policy = kbs_client(port, "config", "--auth-private-key", str(key_file), "set-resource-policy",
                            "--allow-all")  # fmt: skip
        assert policy.returncode == 0, policy.stderr
        before = kbs_client(port, "get-resource", "--path", "default/key/wrapping")
        assert before.returncode != 0  # nothing loaded yet

        loader = Container.of(job["spec"]["template"]["spec"], objects)
        done = loader.run(tmp_path / "job", {f"{RELEASE}-service": "127.0.0.1"}, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr

        for path, content in RESOURCES.items():
            fetched = kbs_client(port, "get-resource", "--path", path)
            assert fetched.returncode == 0, fetched.stderr
            assert base64.b64decode(fetched.stdout.strip()) == content
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Traceback" not in log.read_text()
