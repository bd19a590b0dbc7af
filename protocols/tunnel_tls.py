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
from pathlib import Path

TLS_VERSIONS = {"VersionTLS12": ssl.TLSVersion.TLSv1_2, "VersionTLS13": ssl.TLSVersion.TLSv1_3}


class TunnelTLSError(ValueError):
    """The TLS material or profile is unusable."""


def _min_version(name: str) -> ssl.TLSVersion:
    try:
        return TLS_VERSIONS[name or "VersionTLS12"]
    except KeyError:
        raise TunnelTLSError(f"unknown TLS version {name!r}; use one of {', '.join(TLS_VERSIONS)}") from None


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
    try:
        context.load_verify_locations(cadata=ca_pem)
    except ssl.SSLError as exc:
        raise TunnelTLSError(f"cannot load CA certificate: {exc.reason or exc}") from None


def server_context(cert_pem: str, key_pem: str, client_ca_pem: str, min_version: str = "") -> ssl.SSLContext:
    """The forwarder's side: present the instance's certificate, require a client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _min_version(min_version)
    context.verify_mode = ssl.CERT_REQUIRED
    _load_chain(context, cert_pem, key_pem)
    _load_ca(context, client_ca_pem)
    return context


def client_context(cert_pem: str, key_pem: str, ca_pem: str, min_version: str = "") -> ssl.SSLContext:
    """The adaptor's side: present the client certificate, verify the server against our CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = _min_version(min_version)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    _load_chain(context, cert_pem, key_pem)
    _load_ca(context, ca_pem)
    return context
