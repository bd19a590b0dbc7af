"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and the garbage collector.

Binaries come from `scripts/build-k8s-tools` (built once per version, cached outside the clone).
The API server serves HTTPS with a certificate from a throwaway CA, authenticates static tokens
(an admin in system:masters) and authorizes with RBAC. There is no scheduler and no kubelet: pods
are objects only. kube-controller-manager runs just its garbage collector, so objects owned by a
deleted pod (PeerPods) are deleted as in a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.k8s.pki import ClusterCA

ROOT = Path(__file__).resolve().parents[2]
START_SECONDS = 120.0
ADMIN_TOKEN = "peerpods-test-admin-token"


def tools(*names: str) -> dict[str, Path]:
    """name -> binary of `names` (default: etcd, kube-apiserver, kube-controller-manager, helm), built
    on first use."""
    done = subprocess.run(
        [str(ROOT / "scripts/build-k8s-tools"), "--print", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/build-k8s-tools failed:\n{done.stderr[-4000:]}")
    return {name: Path(path) for name, path in (line.split("=", 1) for line in done.stdout.split())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ControlPlane:
    directory: Path
    binaries: dict[str, Path]
    ca: ClusterCA = field(default_factory=ClusterCA.create)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    port: int = 0
    # Applied before the garbage collector starts, so that it watches their objects from the start
    # (it discovers resource types added later only every 30 s).
    preload: list[Path] = field(default_factory=list)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [str(self.binaries["etcd"]), "--data-dir", str(self.directory / "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
             "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
             "--unsafe-no-fsync", "--log-level", "warn"],
        )  # fmt: skip
        certs = self.directory / "pki"
        self.ca.write_pair(certs, "kube-apiserver", ["127.0.0.1", "localhost", "kubernetes.default.svc"])
        account_key, account_public = certs / "sa.key", certs / "sa.pub"
        signing = ec.generate_private_key(ec.SECP256R1())
        account_key.write_bytes(
            signing.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        account_public.write_bytes(signing.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
        tokens = self.directory / "tokens.csv"
        tokens.write_text(f'{ADMIN_TOKEN},admin,admin-uid,"system:masters"\n')
        self.port = free_port()
        self._spawn(
            "kube-apiserver",
            [str(self.binaries["kube-apiserver"]),
             f"--etcd-servers=http://127.0.0.1:{etcd_port}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
             f"--tls-cert-file={certs / 'tls.crt'}", f"--tls-private-key-file={certs / 'tls.key'}",
             f"--cert-dir={certs}", f"--token-auth-file={tokens}", "--authorization-mode=RBAC",
             f"--service-account-key-file={account_public}",
             f"--service-account-signing-key-file={account_key}",
             # The "kubernetes" Service's endpoint may not be a loopback address: no endpoint.
             "--endpoint-reconciler-type=none",
             "--service-account-issuer=https://kubernetes.default.svc",
             "--service-cluster-ip-range=10.96.0.0/16",
             # No controller creates the "default" ServiceAccount of each namespace here.
             "--disable-admission-plugins=ServiceAccount",
             "--enable-priority-and-fairness=false", "--profiling=false", "--v=0"],
        )  # fmt: skip
        self._write_kubeconfig()
        self._wait_ready()
        for manifest in self.preload:
            self._apply(yaml.safe_load(manifest.read_text()))
        self._spawn(
            "kube-controller-manager",
            [str(self.binaries["kube-controller-manager"]), f"--kubeconfig={self.kubeconfig}",
             "--controllers=garbagecollector", "--leader-elect=false", "--secure-port=0",
             "--concurrent-gc-syncs=20", "--v=0"],
        )  # fmt: skip

    def _spawn(self, name: str, command: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    def _write_kubeconfig(self) -> None:
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {
                "server": self.server, "certificate-authority": str(self.directory / "pki/ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "admin"}}],
            "current-context": "test",
        }  # fmt: skip
        self.kubeconfig.write_text(yaml.safe_dump(document))

    def _apply(self, document: dict[str, object]) -> None:
        """Server-side apply of a cluster-scoped apiextensions object (the CRDs of `preload`)."""
        name = document["metadata"]["name"]  # type: ignore[index]
        request = urllib.request.Request(
            f"{self.server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
            "?fieldManager=peerpods-tests&force=true",
            data=json.dumps(document).encode(), method="PATCH",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}",
                     "Content-Type": "application/apply-patch+yaml"},
        )  # fmt: skip
        context = ssl.create_default_context(cadata=self.ca.pem.decode())
        with urllib.request.urlopen(request, context=context, timeout=30):
            pass

    def _wait_ready(self) -> None:
        """Poll /readyz until the server has its storage and built-in objects (start-up only)."""
        context = ssl.create_default_context(cadata=self.ca.pem.decode())
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            for process in self.processes:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args!r} exited:\n{self.logs()}")
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(request, context=context, timeout=5) as reply,
            ):
                if reply.status == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"kube-apiserver not ready after {START_SECONDS} s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(
            f"== {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.directory.glob("*.log"))
        )

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


@contextlib.contextmanager
def control_plane(directory: Path, preload: list[Path]) -> Iterator[ControlPlane]:
    plane = ControlPlane(directory, tools(), preload=preload)
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        if os.environ.get("PEERPODS_KEEP_CLUSTER_LOGS") is None:
            shutil.rmtree(directory / "etcd", ignore_errors=True)
