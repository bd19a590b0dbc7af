"""TLS contexts for the agent tunnel (adaptor <-> agent-protocol-forwarder), from PEM strings.

Both ends authenticate: the forwarder only accepts clients whose certificate chains to the
`tls-client-ca` it was given in apf.json, and the adaptor only accepts a server certificate issued
by its own CA for the instance's name. Python's ssl module loads keys from files only, so key
material goes through a private temporary file that is removed at once.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

TLS_VERSIONS = {"VersionTLS12": ssl.TLSVersion.TLSv1_2, "VersionTLS13": ssl.TLSVersion.TLSv1_3}

# TLS_CIPHER_SUITES takes IANA names, as upstream (Go) does; OpenSSL wants its own. Only the
# forward-secret AEAD suites of TLS 1.2 are offered: upstream's list of "preferred" names.
CIPHER_SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    # Go's older names of the same two suites
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",
}


class TunnelTLSError(ValueError):
    """The TLS material or profile is unusable."""


def _min_version(name: str) -> ssl.TLSVersion:
    try:
        return TLS_VERSIONS[name or "VersionTLS12"]
    except KeyError:
        raise TunnelTLSError(f"unknown TLS version {name!r}; use one of {', '.join(TLS_VERSIONS)}") from None


def check_tls_profile(min_version: str, cipher_suites: Sequence[str]) -> None:
    """Upstream's rules: TLS 1.2 or 1.3, known suites, and no suites with TLS 1.3 (not configurable)."""
    version = _min_version(min_version)
    unknown = [name for name in cipher_suites if name not in CIPHER_SUITES]
    if unknown:
        raise TunnelTLSError(
            f"unsupported cipher suites {', '.join(unknown)}; use IANA names among {', '.join(CIPHER_SUITES)}"
        )
    if cipher_suites and version is ssl.TLSVersion.TLSv1_3:
        raise TunnelTLSError("cipher suites cannot be chosen with VersionTLS13 (TLS 1.3 suites are fixed)")


def _profile(context: ssl.SSLContext, min_version: str, cipher_suites: Sequence[str]) -> None:
    check_tls_profile(min_version, cipher_suites)
    context.minimum_version = _min_version(min_version)
    if cipher_suites:
        context.set_ciphers(":".join(CIPHER_SUITES[name] for name in cipher_suites))


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    directory = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    fd, name = tempfile.mkstemp(prefix="peerpods-tls-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.rstrip("\n") + "\n" + key_pem)
        context.load_cert_chain(name)
    except ssl.SSLError as exc:
        raise TunnelTLSError(f"cannot load certificate and key: {exc.reason or exc}") from None
    finally:
        Path(name).unlink(missing_ok=True)


def _load_ca(context: ssl.SSLContext, ca_pem: str) -> None:
    """Trust exactly `ca_pem`, even a certificate that is not a self-signed root, as Go does.

    Pod VMs are told to trust the adaptor's client certificate itself (`tls-client-ca`); when that
    is the operator's certificate (CERT_FILE) it is issued by their CA, and OpenSSL would otherwise
    want that CA too. Only what is given here is trusted either way.
    """
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    try:
        context.load_verify_locations(cadata=ca_pem)
    except ssl.SSLError as exc:
        raise TunnelTLSError(f"cannot load CA certificate: {exc.reason or exc}") from None


def server_context(
    cert_pem: str, key_pem: str, client_ca_pem: str, min_version: str = "", cipher_suites: Sequence[str] = ()
) -> ssl.SSLContext:
    """The forwarder's side: present the instance's certificate, require a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _profile(context, min_version, cipher_suites)
    context.verify_mode = ssl.CERT_REQUIRED
    _load_chain(context, cert_pem, key_pem)
    _load_ca(context, client_ca_pem)
    return context


def client_context(
    cert_pem: str, key_pem: str, ca_pem: str, min_version: str = "", cipher_suites: Sequence[str] = ()
) -> ssl.SSLContext:
    """The adaptor's side: present the client certificate, verify the server against our CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _profile(context, min_version, cipher_suites)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_chain(context, cert_pem, key_pem)
    _load_ca(context, ca_pem)
    return context
