"""`keyprovider.KeyProviderService` over gRPC (grpc.aio), as skopeo's ocicrypt dials it
(`{"grpc": "host:port"}` in OCICRYPT_KEYPROVIDER_CONFIG, insecure channel)."""

from __future__ import annotations

import logging

import grpc

from kbs.keyprovider.provider import KeyProvider, KeyProviderError
from protocols.proto import keyprovider_pb2, keyprovider_pb2_grpc

log = logging.getLogger(__name__)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class KeyProviderServicer(keyprovider_pb2_grpc.KeyProviderServiceServicer):
    def __init__(self, provider: KeyProvider) -> None:
        self._provider = provider

    async def WrapKey(
        self, request: keyprovider_pb2.KeyProviderKeyWrapProtocolInput, context: grpc.aio.ServicerContext
    ) -> keyprovider_pb2.KeyProviderKeyWrapProtocolOutput:
        return await self._handle(request, context)

    async def UnWrapKey(
        self, request: keyprovider_pb2.KeyProviderKeyWrapProtocolInput, context: grpc.aio.ServicerContext
    ) -> keyprovider_pb2.KeyProviderKeyWrapProtocolOutput:
        return await self._handle(request, context)

    async def _handle(
        self, request: keyprovider_pb2.KeyProviderKeyWrapProtocolInput, context: grpc.aio.ServicerContext
    ) -> keyprovider_pb2.KeyProviderKeyWrapProtocolOutput:
        try:
            output = await self._provider.handle(request.KeyProviderKeyWrapProtocolInput)
        except KeyProviderError as exc:
            log.info("key provider request refused: %s", exc)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable: abort raises") from exc
        return keyprovider_pb2.KeyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=output)


async def start_grpc(provider: KeyProvider, address: str) -> tuple[grpc.aio.Server, int]:
    """Serve on `address` ("host:port", port 0 picks one); returns the server and its port."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
    keyprovider_pb2_grpc.add_KeyProviderServiceServicer_to_server(KeyProviderServicer(provider), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:  # grpcio's "failed to bind"
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    await server.start()
    return server, port
