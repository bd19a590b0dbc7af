"""The tunnel's certificate authority: per-VM server certificates and the adaptor's client identity.

Two separate identities keep the roles apart, as upstream does: a CA that signs one server
certificate per pod VM (DNS name = instance name, serverAuth only), and a self-signed client
certificate (clientAuth only) that every forwarder is told to trust. A pod VM's own key can
therefore never act as the adaptor towards another pod VM. Both are persisted (0600) in the state
directory, so a restarted adaptor can still reach the pod VMs it started before.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.atomicfile import atomic_write

VALIDITY = datetime.timedelta(days=730)
ORGANIZATION = "cloud-api-adaptor"


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, PEM encoded. `repr` never shows the key."""

    cert_pem: str
    key_pem: str

    def __repr__(self) -> str:
        return f"KeyPair(cert_pem=<{len(self.cert_pem)} chars>, key_pem=<redacted>)"


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _self_signed(common_name: str, *, ca: bool, usage: x509.ObjectIdentifier | None) -> KeyPair:
    key = _new_key()
    name = _name(common_name)
    builder = _builder(name, name, key.public_key()).add_extension(
        x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return KeyPair(_cert_pem(builder.sign(key, hashes.SHA256())), _key_pem(key))


class TunnelAuthority:
    """Issues pod VM server certificates; holds the adaptor's client certificate."""

    def __init__(self, ca: KeyPair, client: KeyPair) -> None:
        self.ca = ca
        self.client = client
        self._ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        self._ca_key = ca_key

    @classmethod
    def load_or_create(cls, directory: Path) -> TunnelAuthority:
        """Load the persisted identities, creating them on first start."""
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = _load_or_create(directory, "tunnel-ca", "agent-protocol-forwarder CA", None)
        client = _load_or_create(directory, "tunnel-client", ORGANIZATION, ExtendedKeyUsageOID.CLIENT_AUTH)
        return cls(ca, client)

    def issue_server(self, instance_name: str) -> KeyPair:
        """A server certificate for one pod VM, valid for the DNS name `instance_name` only."""
        key = _new_key()
        cert = (
            _builder(_name(instance_name), self._ca_cert.subject, key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(instance_name)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self._ca_key, hashes.SHA256())
        )
        return KeyPair(_cert_pem(cert), _key_pem(key))


def _load_or_create(
    directory: Path, role: str, common_name: str, usage: x509.ObjectIdentifier | None
) -> KeyPair:
    cert_path, key_path = directory / f"{role}.crt", directory / f"{role}.key"
    if not (cert_path.exists() and key_path.exists()):
        pair = _self_signed(common_name, ca=usage is None, usage=usage)
        atomic_write(key_path, pair.key_pem.encode(), 0o600)
        atomic_write(cert_path, pair.cert_pem.encode(), 0o600)
    return KeyPair(cert_path.read_text(), key_path.read_text())
