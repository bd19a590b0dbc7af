"""A separate attestation service over upstream's gRPC API (`coco_as_grpc`): `AttestationEvaluate`,
`SetAttestationPolicy` and the RVPS's `RegisterReferenceValue` / `QueryReferenceValue`, as served
by `attestation-service` (`verifier.server.grpc_api`) or upstream's `grpc-as`.

`as_addr` is upstream's URL (`http://host:port`; `https://` uses TLS with the system's roots). The
service refuses with ABORTED or INVALID_ARGUMENT (the reason is the status detail); any other status
(UNAVAILABLE, a deadline) means it cannot be reached for now. The service signs tokens with its own
key, which the KBS trusts through `[attestation_token]` (`trusted_jwk_sets`, `trusted_certs_paths`)
for bearer tokens; a session's own token was stored by the KBS and is not re-verified.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import grpc

from kbs.attestation.base import AttestationRefused, AttestationUnavailable
from kbs.jwt import PublicKey
from protocols.proto import attestation_pb2, attestation_pb2_grpc, reference_pb2, reference_pb2_grpc
from verifier.binding import InitDataDigest, InitDataToml, RawRuntimeData, StructuredRuntimeData
from verifier.service import VerificationRequest

DEFAULT_ADDRESS = "http://127.0.0.1:50004"
TIMEOUT_SECONDS = 60.0
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_REFUSED = (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT)


class AsAddressError(ValueError):
    """`as_addr` is not `http(s)://host:port`."""


def as_target(address: str) -> tuple[str, bool]:
    """(`host:port`, TLS?) of upstream's `as_addr` URL."""
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        raise AsAddressError(f"attestation_service.as_addr {address[:80]!r} is not http(s)://host:port")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise AsAddressError(f"attestation_service.as_addr {address[:80]!r} has a bad port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}", parts.scheme == "https"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _individual(request: VerificationRequest) -> attestation_pb2.IndividualAttestationRequest:
    message = attestation_pb2.IndividualAttestationRequest(
        tee=request.tee,
        evidence=_b64url(request.evidence),
        runtime_data_hash_algorithm=request.runtime_data_hash_algorithm,
    )
    runtime, init = request.runtime_data, request.init_data
    if isinstance(runtime, StructuredRuntimeData):
        message.structured_runtime_data = json.dumps(runtime.value, separators=(",", ":"))
    elif isinstance(runtime, RawRuntimeData):
        message.raw_runtime_data = _b64url(runtime.data)
    if isinstance(init, InitDataToml):
        message.init_data_toml = init.toml
    elif isinstance(init, InitDataDigest):
        message.init_data_digest = _b64url(init.digest)
    return message


class GrpcAttestation:
    def __init__(self, address: str = DEFAULT_ADDRESS, timeout: float = TIMEOUT_SECONDS) -> None:
        self._target, self._tls = as_target(address)
        self._timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        self._attestation: attestation_pb2_grpc.AttestationServiceStub | None = None
        self._reference: reference_pb2_grpc.ReferenceValueProviderServiceStub | None = None

    async def start(self) -> None:
        """The channel belongs to the running event loop, so it is made here; it connects (and
        reconnects) on demand."""
        options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        options.append(("grpc.max_receive_message_length", MAX_MESSAGE_BYTES))
        if self._tls:
            self._channel = grpc.aio.secure_channel(self._target, grpc.ssl_channel_credentials(), options)
        else:
            self._channel = grpc.aio.insecure_channel(self._target, options)
        self._attestation = attestation_pb2_grpc.AttestationServiceStub(self._channel)
        self._reference = reference_pb2_grpc.ReferenceValueProviderServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    def own_keys(self) -> Sequence[PublicKey]:
        return ()

    def _stubs(
        self,
    ) -> tuple[
        attestation_pb2_grpc.AttestationServiceStub, reference_pb2_grpc.ReferenceValueProviderServiceStub
    ]:
        if self._attestation is None or self._reference is None:
            raise AttestationUnavailable("the attestation service client is not started")
        return self._attestation, self._reference

    def _error(self, exc: grpc.aio.AioRpcError) -> Exception:
        detail = exc.details() or exc.code().name
        if exc.code() in _REFUSED:
            return AttestationRefused(detail)
        return AttestationUnavailable(f"attestation service {self._target}: {exc.code().name}: {detail}")

    async def evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str]) -> str:
        stub, _ = self._stubs()
        request = attestation_pb2.AttestationRequest(
            verification_requests=[_individual(item) for item in requests], policy_ids=list(policy_ids)
        )
        try:
            response = await stub.AttestationEvaluate(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        return str(response.attestation_token)

    async def set_policy(self, policy_id: str, policy: str) -> None:
        stub, _ = self._stubs()
        request = attestation_pb2.SetPolicyRequest(
            policy_id=policy_id, policy=_b64url(policy.encode("utf-8"))
        )
        try:
            await stub.SetAttestationPolicy(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def register_reference_value(self, message: bytes) -> None:
        _, stub = self._stubs()
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            raise AttestationRefused("registration message is not UTF-8 text") from None
        try:
            await stub.RegisterReferenceValue(
                reference_pb2.ReferenceValueRegisterRequest(message=text), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None

    async def query_reference_value(self, name: str) -> Any | None:
        _, stub = self._stubs()
        try:
            response = await stub.QueryReferenceValue(
                reference_pb2.ReferenceValueQueryRequest(reference_value_id=name), timeout=self._timeout
            )
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        if not response.HasField("reference_value_results"):
            return None
        try:
            return json.loads(response.reference_value_results)
        except ValueError:
            raise AttestationUnavailable(
                "attestation service answered a reference value that is not JSON"
            ) from None
