"""The attestation service's gRPC API (grpc.aio): upstream `grpc-as`'s two services.

`attestation.AttestationService` (AttestationEvaluate, SetAttestationPolicy, GetAttestationChallenge) and
`reference.ReferenceValueProviderService` (QueryReferenceValue, RegisterReferenceValue). Failures are
ABORTED with the reason as the status message, as upstream. Differences: the JWKS is served by the
REST API only (upstream multiplexes it onto the gRPC port over HTTP/1), and there is no gRPC health
service.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from protocols.proto import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc
from verifier.ear import EarError
from verifier.errors import VerificationError
from verifier.policy import PolicyError
from verifier.rvps import RvpsError
from verifier.server import wire
from verifier.service import AttestationService, RequestError

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_EXPECTED = (VerificationError, RequestError, PolicyError, RvpsError, EarError)


async def _call(context: grpc.aio.ServicerContext, what: str, work: Callable[[], _T] | Awaitable[_T]) -> _T:
    """Run service work (a coroutine, or a function in a thread); a service error aborts the call."""
    try:
        if isinstance(work, Awaitable):
            return await work
        return await asyncio.to_thread(work)
    except _EXPECTED as exc:
        log.info("%s failed: %s", what, exc)
        await context.abort(grpc.StatusCode.ABORTED, f"{what} failed: {exc}")
        raise AssertionError("unreachable: abort raises") from exc


class AttestationServicer(attestation_pb2_grpc.AttestationServiceServicer):
    def __init__(self, service: AttestationService) -> None:
        self._service = service

    async def AttestationEvaluate(
        self, request: attestation_pb2.AttestationRequest, context: grpc.aio.ServicerContext
    ) -> attestation_pb2.AttestationResponse:
        async def work() -> str:
            requests, policy_ids = wire.grpc_attestation(request)
            return await self._service.evaluate_async(requests, policy_ids)

        token = await _call(context, "attestation evaluation", work())
        return attestation_pb2.AttestationResponse(attestation_token=token)

    async def SetAttestationPolicy(
        self, request: attestation_pb2.SetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> attestation_pb2.SetPolicyResponse:
        def work() -> None:
            self._service.set_policy(request.policy_id, wire.policy_text(request.policy))

        await _call(context, "set attestation policy", work)
        return attestation_pb2.SetPolicyResponse()

    async def GetAttestationChallenge(
        self, request: attestation_pb2.ChallengeRequest, context: grpc.aio.ServicerContext
    ) -> attestation_pb2.ChallengeResponse:
        def work() -> str:
            params = dict(request.inner)
            if "tee" not in params or "tee_params" not in params:
                raise RequestError("inner must carry 'tee' and 'tee_params'")
            return self._service.challenge(params["tee"], params["tee_params"])

        challenge = await _call(context, "attestation challenge", work)
        return attestation_pb2.ChallengeResponse(attestation_challenge=challenge)


class ReferenceValueServicer(reference_pb2_grpc.ReferenceValueProviderServiceServicer):
    def __init__(self, service: AttestationService) -> None:
        self._service = service

    async def QueryReferenceValue(
        self, request: reference_pb2.ReferenceValueQueryRequest, context: grpc.aio.ServicerContext
    ) -> reference_pb2.ReferenceValueQueryResponse:
        def work() -> Any:
            return self._service.query_reference_value(request.reference_value_id)

        value = await _call(context, "query reference value", work)
        if value is None:
            return reference_pb2.ReferenceValueQueryResponse()
        return reference_pb2.ReferenceValueQueryResponse(reference_value_results=json.dumps(value))

    async def RegisterReferenceValue(
        self, request: reference_pb2.ReferenceValueRegisterRequest, context: grpc.aio.ServicerContext
    ) -> reference_pb2.ReferenceValueRegisterResponse:
        def work() -> list[str]:
            return self._service.register_reference_value(request.message)

        await _call(context, "register reference value", work)
        return reference_pb2.ReferenceValueRegisterResponse()


async def start_grpc(
    service: AttestationService, address: str, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, int]:
    """Start serving on `address` ("host:port"; port 0 picks one); returns the server and its port."""
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", wire.MAX_BODY_BYTES)])
    attestation_pb2_grpc.add_AttestationServiceServicer_to_server(AttestationServicer(service), server)
    reference_pb2_grpc.add_ReferenceValueProviderServiceServicer_to_server(
        ReferenceValueServicer(service), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:  # grpcio's "failed to bind"
        raise OSError(f"gRPC cannot listen on {address}: {exc}") from None
    await server.start()
    return server, port
