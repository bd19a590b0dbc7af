"""The KBS itself, without HTTP: RCAR handshake, resource release, admin operations.

Every refusal is a `KbsError` carrying upstream's variant and wording; `kbs.app` only maps HTTP to
these calls. The runtime-data binding has no switch: the expected report data is always the
canonical-JSON hash of the session's nonce and the key the guest will receive resources under, and
the attestation service refuses evidence that does not carry it.
"""

from __future__ import annotations

import base64
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from kbs import errors
from kbs.admin import AdminAuth, AdminDenied
from kbs.attestation import AttestationBackend, AttestationRefused, AttestationUnavailable
from kbs.errors import KbsError
from kbs.jwe import JweError, check_key, encrypt
from kbs.metrics import KbsMetrics
from kbs.policy import POLICY_ID, ResourcePolicy, ResourcePolicyError
from kbs.sessions import Session, SessionStore, Sweeper
from kbs.storage import StorageError, StorageFactory, StorageUnavailable
from kbs.store import (
    AsyncResourceStore,
    InvalidResourcePath,
    ResourceNotFound,
    ResourcePath,
    StoreError,
    StoreUnavailable,
)
from kbs.token import TokenError, TokenVerifier, VerifiedToken
from protocols.kbs import (
    NONCE_BYTES,
    Attestation,
    Challenge,
    KbsProtocolError,
    b64url_decode,
    check_version,
    loads,
    parse_attestation,
    parse_request,
    runtime_data_claims,
    runtime_data_hash_algorithm,
)
from verifier.binding import InitDataToml, StructuredRuntimeData
from verifier.ear import EarError
from verifier.errors import VerificationError
from verifier.policy import PolicyError
from verifier.service import RequestError, VerificationRequest

log = logging.getLogger(__name__)
INIT_DATA_FORMAT = "toml"
_AS_ERRORS = (VerificationError, RequestError, PolicyError, EarError)
_T = TypeVar("_T")


@dataclass(frozen=True)
class AdminRequest:
    """What admin authorization looks at: the `Authorization` header and the request URI."""

    authorization: str | None
    uri: str


@dataclass
class Broker:
    attestation: AttestationBackend
    sessions: SessionStore
    tokens: TokenVerifier
    policy: ResourcePolicy
    store: AsyncResourceStore
    admin: AdminAuth
    metrics: KbsMetrics
    policy_ids: Sequence[str] = ("default",)
    storage: StorageFactory | None = None  # what opened the sessions', policy's and store's namespaces
    sweeper: Sweeper | None = None

    async def start(self) -> None:
        """What needs the event loop and the storage before the first request: the attestation
        service's client or shared state, the resource policy stored and checked."""
        await self.attestation.start()
        self.tokens = TokenVerifier(self.tokens.settings, self.attestation.own_keys())  # a shared key
        await self.policy.load()

    async def close(self) -> None:
        await self.attestation.close()
        if self.storage is not None:
            await self.storage.close()

    # ---- RCAR

    async def auth(self, body: bytes) -> tuple[Challenge, Session]:
        """`POST /auth`: a fresh 32-byte nonce in a new session."""
        self.metrics.auth_requests.inc()
        try:
            request = parse_request(body)
            check_version(request.version)
        except KbsProtocolError as exc:
            self.metrics.auth_errors.inc()
            raise errors.attestation_error("Auth", str(exc)) from None
        challenge = Challenge(nonce=base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode("ascii"))
        session = await self._sessions(self.sessions.create(request.tee, challenge.nonce), "Auth")
        self.metrics.auth_successes.inc()
        return challenge, session

    async def attest(self, session_id: str | None, body: bytes) -> tuple[str, Session]:
        """`POST /attest`: the EAR token for evidence bound to this session's nonce."""
        self.metrics.attestation_requests.inc()
        try:
            return await self._attest(session_id, body)
        except KbsError:
            self.metrics.attestation_errors.inc()
            raise

    async def _attest(self, session_id: str | None, body: bytes) -> tuple[str, Session]:
        def refuse(reason: str) -> KbsError:
            return errors.attestation_error("Attest", reason)

        if not session_id:
            raise refuse("cookie not found")
        try:
            attestation = parse_attestation(body)
        except KbsProtocolError as exc:
            raise refuse(f"deserialize Attestation: {exc}") from None
        session = await self._sessions(self.sessions.get(session_id), "Attest")
        if session is None:
            raise refuse("session not found or expired")
        if session.token is not None:  # upstream: an attested session answers with its token again
            return session.token, session
        if attestation.runtime_data.nonce != session.nonce:
            raise refuse(
                "the nonce in the handshake session is different from the client side in KBS"
                " protocol's Attestation message"
            )
        try:
            check_key(attestation.runtime_data.tee_pubkey)
        except JweError as exc:
            raise refuse(f"tee-pubkey cannot receive resources: {exc}") from None
        requests = self._verification_requests(session, attestation, refuse)
        try:
            token = await self.attestation.evaluate(requests, self.policy_ids)
        except AttestationUnavailable as exc:
            log.error("attestation service unavailable: %s", exc)
            raise errors.storage_unavailable(refuse("attestation service unavailable")) from None
        except AttestationRefused as exc:
            self.metrics.attestation_failures.labels(session.tee).inc()
            raise refuse(f"verify TEE evidence failed: {exc}") from None
        try:  # parsed now, kept for the session's /resource requests: never hand out a token they refuse
            self.tokens.stored(token)
        except TokenError as exc:
            self.metrics.attestation_failures.labels(session.tee).inc()
            raise refuse(f"the attestation token cannot be used: {exc}") from None
        self.metrics.attestation_successes.labels(session.tee).inc()
        if not await self._sessions(self.sessions.attest(session, token), "Attest"):
            current = await self._sessions(self.sessions.get(session.id), "Attest")
            if current is None or current.token is None:
                raise refuse("session expired during attestation")
            token = current.token  # a concurrent /attest on this session won; keep one token
        return token, session

    def _verification_requests(
        self, session: Session, attestation: Attestation, refuse: Callable[[str], KbsError]
    ) -> list[VerificationRequest]:
        """The primary TEE's request (bound with additional-evidence) and one per extra device."""
        runtime, evidence = attestation.runtime_data, attestation.tee_evidence
        algorithm = runtime_data_hash_algorithm(session.tee)
        init_data = None
        if attestation.init_data is not None:
            if attestation.init_data.format != INIT_DATA_FORMAT:
                raise refuse(f"init-data format {attestation.init_data.format[:20]!r} is not 'toml'")
            init_data = InitDataToml(attestation.init_data.body)
        primary = runtime_data_claims(session.nonce, runtime.tee_pubkey, evidence.additional_evidence)
        requests = [
            VerificationRequest(
                session.tee,
                orjson.dumps(evidence.primary_evidence),
                StructuredRuntimeData(primary),
                init_data,
                algorithm,
            )
        ]
        try:
            additional = evidence.additional()
        except KbsProtocolError as exc:
            raise refuse(str(exc)) from None
        device = StructuredRuntimeData(runtime_data_claims(session.nonce, runtime.tee_pubkey, None))
        for tee, device_evidence in additional.items():
            requests.append(VerificationRequest(tee, orjson.dumps(device_evidence), device, None, algorithm))
        return requests

    @staticmethod
    async def _sessions(call: Awaitable[_T], stage: str) -> _T:
        try:
            return await call
        except StorageUnavailable as exc:
            log.error("session storage unavailable: %s", exc)
            raise errors.storage_unavailable(
                errors.attestation_error(stage, "Session storage unavailable")
            ) from None
        except StorageError as exc:
            log.error("session storage failure: %s", exc)
            raise errors.attestation_error(stage, "Session storage error") from None

    # ---- resources

    async def _token(self, session_id: str | None, authorization: str | None) -> VerifiedToken:
        """The token of an attested session, else the verified token of `Authorization: Bearer`."""
        try:
            if session_id:
                session = await self._sessions(self.sessions.get(session_id), "Attest")
                if session is not None and session.token is not None:
                    return self.tokens.stored(session.token)
            scheme, _, value = (authorization or "").partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise errors.token_not_found()
            return self.tokens.verify(value.strip())
        except TokenError as exc:
            raise errors.token_invalid(str(exc)) from None

    async def get_resource(
        self,
        parts: Sequence[str],
        query: Mapping[str, str],
        session_id: str | None,
        authorization: str | None,
    ) -> bytes:
        """`GET /resource/<repo>/<type>/<tag>`: the resource as a JWE for the token's TEE key."""
        verified = await self._token(session_id, authorization)
        path = _resource_path(parts)
        data = {"plugin": "resource", "resource-path": list(parts), "query": dict(query)}
        self.metrics.policy_evals.inc()
        try:
            allowed = await self.policy.allows(verified.claims, data)
        except StorageUnavailable as exc:
            log.error("resource policy storage unavailable: %s", exc)
            raise errors.storage_unavailable(
                errors.plugin_error("resource policy storage unavailable")
            ) from None
        except (ResourcePolicyError, StorageError) as exc:
            self.metrics.policy_errors.inc()
            log.warning("resource policy: %s", exc)
            allowed = False
        if not allowed:
            self.metrics.policy_violations.inc()
            raise errors.policy_deny()
        self.metrics.policy_approvals.inc()
        resource = await self._store(self.store.get(path))
        self.metrics.resource_reads.labels(str(path)).inc()
        try:
            return encrypt(resource, verified.tee_pubkey).to_json()
        except JweError as exc:
            raise KbsError("JweError", f"JWE failed: {exc}") from None

    async def set_resource(self, admin: AdminRequest, parts: Sequence[str], body: bytes) -> None:
        self._admin(admin, "resource")
        path = _resource_path(parts)
        await self._store(self.store.put(path, body))
        self.metrics.resource_writes.labels(str(path)).inc()

    async def delete_resource(self, admin: AdminRequest, parts: Sequence[str]) -> None:
        self._admin(admin, "resource")
        await self._store(self.store.delete(_resource_path(parts)))

    @staticmethod
    async def _store(call: Awaitable[_T]) -> _T:
        try:
            return await call
        except ResourceNotFound as exc:
            raise errors.plugin_error(str(exc)) from None
        except StoreUnavailable as exc:
            log.error("resource store unavailable: %s", exc)
            raise errors.storage_unavailable(errors.plugin_error("resource storage unavailable")) from None
        except StoreError as exc:
            log.error("resource store: %s", exc)
            raise errors.plugin_error(str(exc)) from None

    # ---- admin

    def _admin(self, admin: AdminRequest, endpoint: str) -> None:
        try:
            self.admin.check(admin.authorization, admin.uri)
        except AdminDenied as exc:
            raise errors.admin_denied(endpoint, str(exc)) from None

    async def set_attestation_policy(self, admin: AdminRequest, body: bytes) -> None:
        """`{"policy_id": id, "policy": base64url(rego)}` (a `type` member is ignored, as upstream)."""
        self._admin(admin, "attestation-policy")

        def refuse(reason: str) -> KbsError:
            return KbsError("AttestationError", f"Attestation error: Set Attestation Policy failed: {reason}")

        try:
            doc = loads(body, "set policy request")
            if not isinstance(doc, dict):
                raise KbsProtocolError("set policy request must be a JSON object")
            policy_id, policy = doc.get("policy_id"), doc.get("policy")
            if not isinstance(policy_id, str) or not isinstance(policy, str):
                raise KbsProtocolError("set policy request needs string policy_id and policy")
            text = b64url_decode(policy, "policy").decode("utf-8")
        except (KbsProtocolError, UnicodeDecodeError) as exc:
            raise refuse(f"parse set policy request: {exc}") from None
        try:
            await self.attestation.set_policy(policy_id, text)
        except AttestationUnavailable as exc:
            log.error("attestation service unavailable: %s", exc)
            raise errors.storage_unavailable(refuse("attestation service unavailable")) from None
        except AttestationRefused as exc:
            raise refuse(str(exc)) from None

    async def set_resource_policy(self, admin: AdminRequest, body: bytes) -> None:
        self._admin(admin, "resource-policy")

        def refuse(reason: str) -> KbsError:
            return KbsError("ParsePolicyError", f"Failed to parse policy: {reason}")

        try:
            doc = loads(body, "SetPolicy Request Json")
        except KbsProtocolError:
            raise refuse("Illegal SetPolicy Request Json") from None
        if not isinstance(doc, dict) or "policy" not in doc:
            raise refuse("No `policy` field inside SetPolicy Request Json")
        if not isinstance(doc["policy"], str):
            raise refuse("`policy` field is not a string in SetPolicy Request Json")
        try:
            text = b64url_decode(doc["policy"], "policy").decode("utf-8")
        except (KbsProtocolError, UnicodeDecodeError) as exc:
            raise refuse(f"Failed to decode policy: {exc}") from None
        try:
            await self.policy.set(text)
        except StorageUnavailable as exc:
            log.error("resource policy storage unavailable: %s", exc)
            raise errors.storage_unavailable(
                KbsError("PolicyEngineError", "Policy engine error: storage unavailable")
            ) from None
        except (ResourcePolicyError, StorageError) as exc:
            raise KbsError("PolicyEngineError", f"Policy engine error: {exc}") from None

    def list_resource_policies(self, admin: AdminRequest) -> list[str]:
        self._admin(admin, "resource-policy")
        return [POLICY_ID]

    async def register_reference_value(self, admin: AdminRequest, body: bytes) -> None:
        self._admin(admin, "reference-value")

        def refuse(reason: str) -> KbsError:
            return KbsError(
                "RvpsError", f"RVPS configuration failed: Failed to register reference value: {reason}"
            )

        try:
            await self.attestation.register_reference_value(body)
        except AttestationUnavailable as exc:
            log.error("attestation service unavailable: %s", exc)
            raise errors.storage_unavailable(refuse("attestation service unavailable")) from None
        except AttestationRefused as exc:
            raise refuse(str(exc)) from None

    async def query_reference_value(self, admin: AdminRequest, parts: Sequence[str]) -> Any:
        self._admin(admin, "reference-value")
        name = "/".join(parts)
        try:
            value = await self.attestation.query_reference_value(name)
        except (AttestationUnavailable, AttestationRefused) as exc:
            log.error("attestation service: %s", exc)
            error = KbsError(
                "RvpsError", "RVPS configuration failed: Failed to get reference_values: unavailable"
            )
            raise errors.storage_unavailable(error) from None
        if value is None:
            raise KbsError(
                "RvpsError",
                f"RVPS configuration failed: Failed to get reference_values: "
                f"No reference value found for the given id: {name[:100]}",
            )
        return value


def _resource_path(parts: Sequence[str]) -> ResourcePath:
    try:
        return ResourcePath.parse(tuple(parts))
    except InvalidResourcePath as exc:
        raise errors.plugin_error(str(exc)) from None
