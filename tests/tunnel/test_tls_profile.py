"""TLS_MIN_VERSION / TLS_CIPHER_SUITES reach both ends of the tunnel (the forwarder reads them from apf.json).

As in Go, the suites govern TLS 1.2 only; TLS 1.3, when both ends offer it, keeps its own.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from adaptor.tunnel.authority import TunnelAuthority
from protocols.tunnel_tls import TunnelTLSError, check_tls_profile, client_context, server_context

INSTANCE = "podvm-tls-0123abcd"
RSA_FREE = "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"
OTHER = "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"


async def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """The cipher the two contexts agree on over loopback; raises if they cannot agree."""
    accepted: asyncio.Queue[str] = asyncio.Queue()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put(writer.get_extra_info("cipher")[0])
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname=INSTANCE)
        cipher: str = writer.get_extra_info("cipher")[0]
        writer.close()
        assert await accepted.get() == cipher
        return cipher
    finally:
        listener.close()
        await listener.wait_closed()


async def test_cipher_suites_are_applied_on_both_ends(tmp_path: Path) -> None:
    authority = TunnelAuthority.load_or_create(tmp_path)
    vm = authority.issue_server(INSTANCE)
    server = server_context(vm.cert_pem, vm.key_pem, authority.client.cert_pem, "VersionTLS12", [RSA_FREE])
    clients = {}
    for suite in (RSA_FREE, OTHER):
        clients[suite] = client_context(
            authority.client.cert_pem,
            authority.client.key_pem,
            authority.ca.cert_pem,
            "VersionTLS12",
            [suite],
        )
        clients[suite].maximum_version = ssl.TLSVersion.TLSv1_2  # where the suites apply
    assert await handshake(server, clients[RSA_FREE]) == "ECDHE-ECDSA-AES256-GCM-SHA384"
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await handshake(server, clients[OTHER])


def test_profile_rules_are_upstreams() -> None:
    check_tls_profile("", [])
    check_tls_profile("VersionTLS13", [])
    for version, suites in (
        ("VersionTLS11", []),
        ("VersionTLS13", [RSA_FREE]),
        ("", ["TLS_RSA_WITH_RC4_128_SHA"]),
    ):
        with pytest.raises(TunnelTLSError):
            check_tls_profile(version, suites)
