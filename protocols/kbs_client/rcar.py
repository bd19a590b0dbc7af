"""The guest side of the KBS protocol (RCAR 0.4.0): auth -> attest -> resource, as upstream's
`kbs_protocol` client does it.

Background-check mode (an evidence provider is given): `/auth` opens a session (cookie
`kbs-session-id`), `/attest` sends evidence whose report data binds the challenge nonce and this
client's TEE public key, and resources are fetched on that session; a 401 re-runs the handshake.
Passport mode (a token and the TEE key it was issued for): resources are fetched with
`Authorization: Bearer <token>`.

Upstream's retry shape is kept: the handshake is tried up to 5 times, 1 s apart; a resource request up
to 3 times, re-attesting after each 401.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from protocols.kbs import (
    HASH_ALGORITHMS,
    SESSION_COOKIE,
    SUPPORTED_HASH_ALGORITHMS_PARAM,
    Attestation,
    CompositeEvidence,
    InitData,
    KbsProtocolError,
    Request,
    RuntimeData,
    parse_challenge,
    parse_token_response,
    runtime_data_claims,
    runtime_data_digest,
)
from protocols.kbs_client.errors import KbsClientError, KbsResponseError, RcarHandshakeError
from protocols.kbs_client.http import DEFAULT_TIMEOUT, HttpResponse, KbsHttp, raise_for_status
from protocols.kbs_client.resource_uri import ResourceUri, parse_resource_path, parse_resource_uri
from protocols.kbs_client.teekey import TeeKeyPair
from protocols.kbs_client.token import Token

log = logging.getLogger(__name__)

RCAR_MAX_ATTEMPTS = 5
RCAR_RETRY_DELAY = 1.0
RESOURCE_MAX_ATTEMPTS = 3
INIT_DATA_FORMAT = "toml"
_JSON = {"Content-Type": "application/json"}
# RFC 6265 cookie-octets: what may be echoed back in a Cookie header.
_COOKIE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]{1,256}")


class EvidenceProvider(Protocol):
    """Where the client gets evidence: the local attester(s) (upstream `EvidenceProvider`). Failures
    are raised as `EvidenceError`."""

    async def tee(self) -> str:
        """The primary TEE's `kbs_types::Tee` name ("snp", "tdx", "sample", ...)."""

    async def primary_evidence(self, runtime_data_digest: bytes) -> Any:
        """The primary TEE's evidence (a JSON value) with the digest as its report data."""

    async def additional_evidence(self, runtime_data_digest: bytes) -> str:
        """Extra devices' evidence as a JSON string of `{tee: evidence}`, or "" without devices."""


class KbsClient:
    """One guest's conversation with one KBS. Not safe for concurrent use: callers serialise."""

    def __init__(
        self,
        url: str,
        *,
        evidence_provider: EvidenceProvider | None = None,
        tee_key: TeeKeyPair | None = None,
        token: str | None = None,
        init_data: str | None = None,
        ca_pem: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        rcar_attempts: int = RCAR_MAX_ATTEMPTS,
        retry_delay: float = RCAR_RETRY_DELAY,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if evidence_provider is None and (token is None or tee_key is None):
            raise KbsClientError("a KBS client needs an evidence provider, or a token and its TEE key")
        self._http = KbsHttp(url, session=session, ca_pem=ca_pem, timeout=timeout)
        self._provider = evidence_provider
        self.tee_key = tee_key if tee_key is not None else TeeKeyPair.generate()
        self._token = Token.parse(token) if token is not None else None
        self._init_data = init_data
        self._session_id: str | None = None
        self._rcar_attempts = max(1, rcar_attempts)
        self._retry_delay = retry_delay
        self._sleep = sleep

    async def __aenter__(self) -> KbsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    @property
    def token(self) -> Token | None:
        return self._token

    async def get_token(self) -> tuple[Token, TeeKeyPair]:
        """A valid attestation token for this client's TEE key, attesting if there is none yet."""
        if self._token is None or not self._token.is_valid():
            await self._attest_with_retries()
        assert self._token is not None
        return self._token, self.tee_key

    async def get_resource(self, resource: str | ResourceUri) -> bytes:
        """The decrypted resource named by `repo/type/tag` or a `kbs://` URI."""
        uri = _resource(resource)
        if self._provider is not None and (self._token is None or not self._token.is_valid()):
            await self._attest_with_retries()
        for attempt in range(1, RESOURCE_MAX_ATTEMPTS + 1):
            response = await self._http.request("GET", uri.endpoint(), headers=self._credentials())
            if response.status == 200:
                return self.tee_key.decrypt_response(response.body)
            if response.status == 401 and self._provider is not None and attempt < RESOURCE_MAX_ATTEMPTS:
                log.warning("KBS refused resource %s (401), attesting again", uri.resource_path)
                await self._handshake()
                continue
            raise_for_status(response)
        raise KbsResponseError("unreachable: the resource loop always returns or raises")  # pragma: no cover

    def _credentials(self) -> dict[str, str]:
        if self._provider is None:
            assert self._token is not None
            return {"Authorization": f"Bearer {self._token.content}"}
        return {"Cookie": f"{SESSION_COOKIE}={self._session_id}"} if self._session_id else {}

    async def _attest_with_retries(self) -> None:
        if self._provider is None:
            raise KbsClientError("this client has no evidence provider to attest with")
        for attempt in range(1, self._rcar_attempts + 1):
            try:
                await self._handshake()
                return
            except KbsClientError as exc:
                if attempt == self._rcar_attempts:
                    raise RcarHandshakeError(
                        f"RCAR handshake failed {self._rcar_attempts} times; last error: {exc}"
                    ) from exc
                log.warning("RCAR handshake failed (%s), retry %d", exc, attempt)
                await self._sleep(self._retry_delay)

    async def _handshake(self) -> None:
        """One auth + attest round; on success the session cookie and the token are stored."""
        assert self._provider is not None
        self._session_id = None
        tee = await self._provider.tee()
        request = Request(tee=tee, extra_params={SUPPORTED_HASH_ALGORITHMS_PARAM: list(HASH_ALGORITHMS)})
        response = await self._http.request("POST", "auth", body=request.to_json(), headers=_JSON)
        raise_for_status(response)
        self._session_id = _session_cookie(response, required=True)
        try:
            challenge = parse_challenge(response.body)
            attestation = await self._attestation(challenge.nonce, challenge.hash_algorithm())
        except KbsProtocolError as exc:
            raise KbsResponseError(f"KBS challenge unusable: {exc}") from None
        response = await self._http.request(
            "POST", "attest", body=attestation.to_json(), headers={**_JSON, **self._credentials()}
        )
        raise_for_status(response)
        self._session_id = _session_cookie(response, required=False) or self._session_id
        try:
            token = parse_token_response(response.body)
        except KbsProtocolError as exc:
            raise KbsResponseError(f"KBS attestation response unusable: {exc}") from None
        self._token = Token.parse(token)

    async def _attestation(self, nonce: str, algorithm: str) -> Attestation:
        """Evidence bound to (nonce, TEE key): devices first, then the primary TEE, whose binding also
        covers the devices' evidence (upstream `get_composite_evidence`)."""
        assert self._provider is not None
        pubkey = self.tee_key.public_key
        device_digest = runtime_data_digest(runtime_data_claims(nonce, pubkey, None), algorithm)
        additional = await self._provider.additional_evidence(device_digest)
        primary_digest = runtime_data_digest(runtime_data_claims(nonce, pubkey, additional), algorithm)
        primary = await self._provider.primary_evidence(primary_digest)
        init_data = InitData(INIT_DATA_FORMAT, self._init_data) if self._init_data is not None else None
        return Attestation(
            runtime_data=RuntimeData(nonce=nonce, tee_pubkey=pubkey),
            tee_evidence=CompositeEvidence(primary_evidence=primary, additional_evidence=additional),
            init_data=init_data,
        )


def _session_cookie(response: HttpResponse, *, required: bool) -> str | None:
    value = response.cookie(SESSION_COOKIE)
    if value is None:
        if required:
            raise KbsResponseError(f"KBS /auth response sets no {SESSION_COOKIE} cookie")
        return None
    if not _COOKIE_VALUE.fullmatch(value):
        raise KbsResponseError(f"KBS {SESSION_COOKIE} cookie holds characters a cookie may not")
    return value


def _resource(resource: str | ResourceUri) -> ResourceUri:
    if isinstance(resource, ResourceUri):
        return resource
    return parse_resource_uri(resource) if "://" in resource else parse_resource_path(resource)
