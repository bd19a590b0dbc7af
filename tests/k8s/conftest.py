"""One real control plane for the whole session (starting one takes seconds), a namespace per test."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.kubeapi import Json, KubeClient, KubeConfig
from tests.chaos.moto_server import moto_server
from tests.k8s.cluster import ROOT, ControlPlane, control_plane, tools
from tests.kbs.dbservers import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]  # the KBS chart's database

_names = itertools.count()
CRD_FILE = ROOT / "deploy/charts/peerpods/charts/peerpodctrl/crds/confidentialcontainers.org_peerpods.yaml"
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture(scope="session")
def plane() -> Iterator[ControlPlane]:
    directory = Path(tempfile.mkdtemp(prefix="pp-k8s-", dir="/tmp"))
    try:
        with control_plane(directory, [CRD_FILE]) as running:
            yield running
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def helm() -> Path:
    return tools("helm")["helm"]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short scratch path: unix socket paths (agent sockets under the pods dir) stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def kube(plane: ControlPlane) -> AsyncIterator[KubeClient]:
    async with KubeClient(KubeConfig.from_file(plane.kubeconfig)) as client:
        yield client


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"t{next(_names)}-{secrets.token_hex(3)}"
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    yield name


@pytest.fixture
async def crd(kube: KubeClient) -> None:
    """The chart's PeerPod CRD, applied and established (served) before the test uses it."""
    body = yaml.safe_load(CRD_FILE.read_text())
    path = f"{CRDS}/{body['metadata']['name']}"
    await kube.apply(path, body, "peerpods-tests")
    async with asyncio.timeout(60):
        while True:
            conditions = (await kube.get(path)).get("status", {}).get("conditions") or []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                return
            await asyncio.sleep(0.05)


@pytest.fixture(scope="session")
def moto_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url


async def create_node(kube: KubeClient, name: str) -> None:
    await kube.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


async def create_pod(kube: KubeClient, namespace: str, name: str, **spec: Any) -> Json:
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec}}  # fmt: skip
    return await kube.create(f"/api/v1/namespaces/{namespace}/pods", body)
