"""The tunnel's certificate authority: per-VM server certificates and the adaptor's client identity.

Two separate identities keep the roles apart, as upstream does: a CA that signs one server
certificate per pod VM (DNS name = instance name, serverAuth only), and a self-signed client
certificate (clientAuth only) that every forwarder is told to trust. A pod VM's own key can
therefore never act as the adaptor towards another pod VM. Both are persisted (0600) in the state
directory, so a restarted adaptor can still reach the pod VMs it started before.

Upstream's manual mode is supported too (`CustomPKI`): `-cert-file`/`-cert-key` replace the client
identity; `-ca-cert-file` replaces the trust anchor, and then, as upstream, pod VMs bring their own
server certificate for the name `podvm-server` (the image's `/etc/certificates`), so none is sent.
"""

from __future__ import annotations

import datetime
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from protocols.atomicfile import atomic_write
from protocols.tunnel_tls import client_context

VALIDITY = datetime.timedelta(days=730)
ORGANIZATION = "cloud-api-adaptor"
# The one name a pod VM's own server certificate is checked for when a custom CA is configured
# (upstream's podvmServername): the adaptor cannot know which names the operator's CA signed.
CUSTOM_SERVER_NAME = "podvm-server"


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


@dataclass(frozen=True)
class CustomPKI:
    """The operator's own tunnel certificates: a trust anchor and/or the adaptor's client identity."""

    ca_pem: str = ""
    client: KeyPair | None = None


def read_custom_pki(ca_file: str, cert_file: str, key_file: str) -> tuple[CustomPKI, list[str]]:
    """CACERT_FILE, CERT_FILE and CERT_KEY read and checked; the problems found, one line each.

    A custom CA needs a custom client certificate it issued: pod VMs configured with that CA trust
    no other client, so the adaptor's generated identity could never connect.
    """
    problems: list[str] = []
    if bool(cert_file) != bool(key_file):
        problems.append("-cert-file (CERT_FILE) and -cert-key (CERT_KEY) go together")
    if ca_file and not cert_file:
        problems.append(
            "-ca-cert-file (CACERT_FILE) needs -cert-file and -cert-key: pod VMs that trust this CA "
            "accept only client certificates it issued"
        )
    ca_certs = _read_certificates(ca_file, "-ca-cert-file (CACERT_FILE)", problems) if ca_file else []
    client: KeyPair | None = None
    if cert_file and key_file:
        client = _read_client(cert_file, key_file, problems)
    if client is not None and ca_certs:
        cert = x509.load_pem_x509_certificate(client.cert_pem.encode())
        if not any(_issued_by(cert, ca) for ca in ca_certs):
            problems.append(
                f"-cert-file (CERT_FILE) {cert_file}: not issued by -ca-cert-file (CACERT_FILE) {ca_file}; "
                "pod VMs that trust that CA would refuse it"
            )
    if problems:
        return CustomPKI(), problems
    ca_pem = "".join(_cert_pem(ca) for ca in ca_certs)
    return CustomPKI(ca_pem, client), []


def _read(path: str, what: str, problems: list[str]) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        problems.append(f"{what}: cannot read {path}: {exc.strerror}")
        return None


def _read_certificates(path: str, what: str, problems: list[str]) -> list[x509.Certificate]:
    data = _read(path, what, problems)
    if data is None:
        return []
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        problems.append(f"{what}: {path} holds no PEM certificate")
        return []


def _read_client(cert_file: str, key_file: str, problems: list[str]) -> KeyPair | None:
    certs = _read_certificates(cert_file, "-cert-file (CERT_FILE)", problems)
    key_data = _read(key_file, "-cert-key (CERT_KEY)", problems)
    if not certs or key_data is None:
        return None
    try:
        key = serialization.load_pem_private_key(key_data, password=None)
    except (ValueError, TypeError):
        # Never the library's text: it could quote parts of the key.
        problems.append(f"-cert-key (CERT_KEY): {key_file} holds no unencrypted PEM private key")
        return None
    cert = certs[0]
    if cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ):
        problems.append(
            f"-cert-key (CERT_KEY) {key_file} is not the key of -cert-file (CERT_FILE) {cert_file}"
        )
        return None
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        problems.append(f"-cert-file (CERT_FILE) {cert_file} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        return None
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return KeyPair("".join(_cert_pem(c) for c in certs), pkcs8)


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class TunnelAuthority:
    """Issues pod VM server certificates; holds the adaptor's client certificate."""

    def __init__(self, ca: KeyPair, client: KeyPair, custom_ca_pem: str = "") -> None:
        self.ca = ca
        self.client = client
        self.custom_ca_pem = custom_ca_pem
        self._ca_cert = x509.load_pem_x509_certificate(ca.cert_pem.encode())
        ca_key = serialization.load_pem_private_key(ca.key_pem.encode(), password=None)
        assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
        self._ca_key = ca_key

    @classmethod
    def load_or_create(cls, directory: Path, custom: CustomPKI | None = None) -> TunnelAuthority:
        """Load the persisted identities, creating them on first start; `custom` ones take their place."""
        custom = custom or CustomPKI()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        ca = _load_or_create(directory, "tunnel-ca", "agent-protocol-forwarder CA", None)
        client = custom.client or _load_or_create(
            directory, "tunnel-client", ORGANIZATION, ExtendedKeyUsageOID.CLIENT_AUTH
        )
        return cls(ca, client, custom.ca_pem)

    @property
    def pod_vms_bring_certificates(self) -> bool:
        """True with a custom CA: pod VMs use their image's server certificate, none is sent."""
        return bool(self.custom_ca_pem)

    def server_name(self, instance_name: str) -> str:
        """The name a pod VM's server certificate must carry."""
        return CUSTOM_SERVER_NAME if self.custom_ca_pem else instance_name

    def client_context(self, min_version: str = "", cipher_suites: Sequence[str] = ()) -> ssl.SSLContext:
        """The adaptor's TLS side: its client identity, pod VMs verified against the trusted CA."""
        trusted = self.custom_ca_pem or self.ca.cert_pem
        return client_context(self.client.cert_pem, self.client.key_pem, trusted, min_version, cipher_suites)

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
