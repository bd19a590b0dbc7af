"""Upstream's manual TLS mode: the operator's CA and client certificate (CACERT_FILE, CERT_FILE, CERT_KEY).

The adaptor presents the operator's client certificate and accepts only a pod VM certificate for
`podvm-server` from the operator's CA; the pod VM's forwarder runs with its image's certificates
(`-cert-file -cert-key -ca-cert-file`), and nothing of the tunnel's TLS goes into the user data.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from adaptor.config import SETTINGS, AdaptorConfig
from adaptor.tunnel.authority import CUSTOM_SERVER_NAME, TunnelAuthority, read_custom_pki
from adaptor.tunnel.proxy import AgentProxy
from adaptor.userdata import build_user_data
from podvm.forwarder.cli import parser as forwarder_parser
from podvm.forwarder.cli import tls_from
from podvm.forwarder.service import start_forwarder
from podvm.standin_agent.agent import StandinAgent
from protocols.agent import HEALTH_SERVICE
from protocols.apf import ForwarderConfig
from protocols.proto import health_pb2
from protocols.ttrpc.client import Client
from protocols.ttrpc.server import Server
from protocols.ttrpc.status import Code, TtrpcError
from protocols.tunnel_tls import server_context
from providers.settings import resolve

INSTANCE = "podvm-web-0123abcd"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _certificate(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def _write(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


def operator_pki(directory: Path, server_name: str = CUSTOM_SERVER_NAME) -> Path:
    """What an operator mounts at /etc/certificates: ca.crt, client.crt/key and the pod VM's tls.crt/key."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _certificate("operator CA", ca_key, None, ca=True)
    _write(directory, "ca", ca, ca_key)
    client_key, server_key = _key(), _key()
    client = _certificate(
        "cloud-api-adaptor", client_key, (ca, ca_key), usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    _write(directory, "client", client, client_key)
    server = _certificate(server_name, server_key, (ca, ca_key), usage=ExtendedKeyUsageOID.SERVER_AUTH)
    _write(directory, "tls", server, server_key)
    return directory


def custom_authority(state: Path, certificates: Path) -> TunnelAuthority:
    pki, problems = read_custom_pki(
        str(certificates / "ca.crt"), str(certificates / "client.crt"), str(certificates / "client.key")
    )
    assert problems == []
    return TunnelAuthority.load_or_create(state, pki)


@dataclass
class PodVM:
    """A stand-in agent behind the real forwarder, started as the image does in manual TLS mode."""

    agent: StandinAgent
    agent_server: Server
    forwarder: Server
    port: int


@pytest.fixture
async def pod_vm(tmp_path: Path) -> AsyncIterator[PodVM]:
    certificates = operator_pki(tmp_path / "certificates")
    agent = StandinAgent(tmp_path / "agent")
    agent_server = Server(agent.services())
    await agent_server.listen_unix(tmp_path / "agent.sock")
    args = forwarder_parser().parse_args(
        ["-cert-file", str(certificates / "tls.crt"), "-cert-key", str(certificates / "tls.key"),
         "-ca-cert-file", str(certificates / "ca.crt")]
    )  # fmt: skip
    cert, key, client_ca = tls_from(args, ForwarderConfig())  # apf.json carries no TLS in this mode
    forwarder, upstream, port = await start_forwarder(
        "127.0.0.1", 0, tmp_path / "agent.sock", server_context(cert, key, client_ca)
    )
    yield PodVM(agent, agent_server, forwarder, port)
    await forwarder.close()
    await upstream.close()
    await agent.close()
    await agent_server.close()


async def health_through(proxy: AgentProxy, socket: Path) -> int:
    await proxy.start()
    try:
        await proxy.connect()
        async with await Client.connect_unix(socket) as client:
            reply = await client.unary(
                HEALTH_SERVICE, "Check", health_pb2.CheckRequest(), health_pb2.HealthCheckResponse, timeout=10
            )
        return int(reply.status)
    finally:
        await proxy.close()


async def test_the_operators_certificates_carry_the_tunnel(pod_vm: PodVM, tmp_path: Path) -> None:
    authority = custom_authority(tmp_path / "state", tmp_path / "certificates")
    assert authority.server_name(INSTANCE) == CUSTOM_SERVER_NAME
    proxy = AgentProxy(
        tmp_path / "agent.ttrpc",
        "127.0.0.1",
        pod_vm.port,
        authority.server_name(INSTANCE),
        authority.client_context(),
        dial_timeout_s=5,
    )
    assert await health_through(proxy, tmp_path / "agent.ttrpc") == health_pb2.HealthCheckResponse.SERVING


async def test_the_generated_identity_is_refused_by_a_pod_vm_of_the_operators_ca(
    pod_vm: PodVM, tmp_path: Path
) -> None:
    generated = TunnelAuthority.load_or_create(tmp_path / "generated")
    certificates = tmp_path / "certificates"
    # Our client certificate, but trusting the operator's CA so that only the client side differs.
    mixed = TunnelAuthority(generated.ca, generated.client, (certificates / "ca.crt").read_text())
    proxy = AgentProxy(
        tmp_path / "p.sock",
        "127.0.0.1",
        pod_vm.port,
        CUSTOM_SERVER_NAME,
        mixed.client_context(),
        dial_timeout_s=1,
    )
    with pytest.raises(TtrpcError) as refused:
        await health_through(proxy, tmp_path / "p.sock")
    assert refused.value.code == Code.UNAVAILABLE


async def test_a_pod_vm_certificate_for_another_name_is_refused(tmp_path: Path) -> None:
    certificates = operator_pki(tmp_path / "certificates", server_name="podvm-impostor")
    authority = custom_authority(tmp_path / "state", certificates)
    cert, key = (certificates / "tls.crt").read_text(), (certificates / "tls.key").read_text()
    forwarder, upstream, port = await start_forwarder(
        "127.0.0.1",
        0,
        tmp_path / "none.sock",
        server_context(cert, key, (certificates / "ca.crt").read_text()),
    )
    proxy = AgentProxy(
        tmp_path / "p.sock", "127.0.0.1", port, authority.server_name(INSTANCE), authority.client_context(), 1
    )
    with pytest.raises(TtrpcError) as refused:
        await health_through(proxy, tmp_path / "p.sock")
    assert "certificate" in refused.value.message.lower()
    await forwarder.close()
    await upstream.close()


def test_user_data_carries_no_tunnel_tls_with_a_custom_ca(tmp_path: Path) -> None:
    certificates = operator_pki(tmp_path / "certificates")
    environ = {
        "PEERPODS_STATE_DIR": str(tmp_path / "state"),
        "CACERT_FILE": str(certificates / "ca.crt"),
        "CERT_FILE": str(certificates / "client.crt"),
        "CERT_KEY": str(certificates / "client.key"),
    }
    config = AdaptorConfig.from_values(resolve(SETTINGS, None, environ))
    authority = TunnelAuthority.load_or_create(tmp_path / "state", config.tunnel_pki)
    assert authority.client.cert_pem == (certificates / "client.crt").read_text()
    user_data = build_user_data(config, authority, authority.issue_server(INSTANCE), "web", "")
    files = {f["path"]: f["content"] for f in yaml.safe_load(user_data.decode())["write_files"]}
    apf = json.loads(files["/run/peerpod/apf.json"])
    assert apf["tls-server-key"] == apf["tls-server-cert"] == apf["tls-client-ca"] == ""
    assert "PRIVATE KEY" not in user_data.decode()


def test_custom_certificates_are_checked_at_start_one_line_per_problem(tmp_path: Path) -> None:
    good = operator_pki(tmp_path / "good")
    other = operator_pki(tmp_path / "other")
    cases = {
        ("ca", "", ""): ["-ca-cert-file (CACERT_FILE) needs -cert-file and -cert-key"],
        ("", "client.crt", ""): ["-cert-file (CERT_FILE) and -cert-key (CERT_KEY) go together"],
        ("missing", "client.crt", "client.key"): ["-ca-cert-file (CACERT_FILE): cannot read"],
        ("", "client.crt", "other-key"): ["-cert-key (CERT_KEY)", "is not the key of -cert-file"],
        ("other-ca", "client.crt", "client.key"): ["not issued by -ca-cert-file (CACERT_FILE)"],
        ("", "client.key", "client.key"): ["-cert-file (CERT_FILE):", "holds no PEM certificate"],
        ("", "client.crt", "client.crt"): ["-cert-key (CERT_KEY):", "holds no unencrypted PEM private key"],
    }
    paths = {
        "": "",
        "ca": str(good / "ca.crt"),
        "missing": str(good / "nope.crt"),
        "other-ca": str(other / "ca.crt"),
        "other-key": str(other / "client.key"),
        "client.crt": str(good / "client.crt"),
        "client.key": str(good / "client.key"),
    }
    key_text = (good / "client.key").read_text()
    for (ca, cert, key), expected in cases.items():
        pki, problems = read_custom_pki(paths[ca], paths[cert], paths[key])
        assert len(problems) == 1 and all(part in problems[0] for part in expected), (ca, cert, key, problems)
        assert pki.client is None and pki.ca_pem == ""
        assert "\n" not in problems[0] and key_text.splitlines()[1] not in problems[0]
