"""A whole pod on `cloud-api-adaptor local` with the operator's client certificate (CERT_FILE, CERT_KEY)."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import yaml

from protocols.agent import HEALTH_SERVICE
from protocols.proto import health_pb2
from protocols.ttrpc.client import Client
from shimdriver.driver import shim_annotations
from tests.adaptor.conftest import LocalAdaptor, _kill_local_vms
from tests.tunnel.test_custom_certificates import operator_pki


async def test_pod_vms_trust_the_operators_client_certificate(short_dir: Path) -> None:
    certificates = operator_pki(short_dir / "certs")
    adaptor = LocalAdaptor(short_dir)
    adaptor.env = {
        **adaptor.env,
        "CERT_FILE": str(certificates / "client.crt"),
        "CERT_KEY": str(certificates / "client.key"),
    }
    await adaptor.start()
    try:
        sandbox = secrets.token_hex(32)
        socket = await adaptor.hypervisor.create_vm(sandbox, shim_annotations("web", "shop"))
        await adaptor.hypervisor.start_vm(sandbox)
        [vm] = adaptor.local_vms()
        user_data = yaml.safe_load((adaptor.vms / vm / "cidata" / "user-data").read_text())
        files = {f["path"]: f["content"] for f in user_data["write_files"]}
        apf = json.loads(files["/run/peerpod/apf.json"])
        assert apf["tls-client-ca"] == (certificates / "client.crt").read_text()
        async with await Client.connect_unix(socket) as agent:
            reply = await agent.unary(
                HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=10
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await adaptor.hypervisor.stop_vm(sandbox)
    finally:
        await adaptor.stop()
        await _kill_local_vms(adaptor.vms)
    assert not (adaptor.state_dir / "tls" / "tunnel-client.key").exists()  # no generated identity
