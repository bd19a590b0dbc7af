"""The client's state machine against a KBS that misbehaves on purpose (things the real KBS never
does): missing or odd cookies, garbage bodies, other hash algorithms, repeated 401s, big responses.
The well-behaved path is tested against the real KBS in test_e2e.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from podvm.attestation_agent.agent import AttesterEvidence
from podvm.attestation_agent.attester import SampleAttester
from protocols import kbs
from protocols.kbs_client.errors import (
    JweError,
    KbsClientError,
    KbsConnectionError,
    KbsHttpError,
    KbsResponseError,
    KbsUnauthorized,
    RcarHandshakeError,
    ResourceNotFound,
)
from protocols.kbs_client.http import MAX_RESPONSE_BYTES
from protocols.kbs_client.rcar import KbsClient
from protocols.kbs_client.teekey import TeeKeyPair
from tests.kbs_client.jose import encrypt_for

NONCE = base64.b64encode(bytes(range(32))).decode()
SECRET = b"fault secret"


@dataclass
class OddKbs:
    """A scripted KBS: each endpoint answers with what the test sets; requests are recorded."""

    auth: Callable[[web.Request], web.Response] | None = None
    attest: Callable[[web.Request, dict[str, Any]], web.Response] | None = None
    resource: Callable[[web.Request], web.Response] | None = None
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    attestations: list[dict[str, Any]] = field(default_factory=list)
    key_jwk: dict[str, Any] | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/kbs/v0/auth", self._auth)
        app.router.add_post("/kbs/v0/attest", self._attest)
        app.router.add_get("/kbs/v0/resource/{path:.*}", self._resource)
        return app

    def _record(self, request: web.Request) -> None:
        self.requests.append(
            (
                request.path.rsplit("/", 1)[-1] if "resource" not in request.path else "resource",
                request.headers.get("Cookie"),
            )
        )

    async def _auth(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.auth is not None:
            return self.auth(request)
        response = web.json_response({"nonce": NONCE, "extra-params": ""})
        response.set_cookie(kbs.SESSION_COOKIE, f"s{len(self.requests)}")
        return response

    async def _attest(self, request: web.Request) -> web.Response:
        self._record(request)
        doc = await request.json()
        self.attestations.append(doc)
        self.key_jwk = doc["runtime-data"]["tee-pubkey"]
        if self.attest is not None:
            return self.attest(request, doc)
        return web.json_response({"token": _token()})

    async def _resource(self, request: web.Request) -> web.Response:
        self._record(request)
        if self.resource is not None:
            return self.resource(request)
        assert self.key_jwk is not None
        return web.Response(body=encrypt_for(self.key_jwk, SECRET), content_type="application/json")


def _token(**claims: Any) -> str:
    return f"{kbs.b64url_encode(b'{}')}.{kbs.b64url_encode(json.dumps(claims).encode())}.sig"


def _error(status: int, variant: str, detail: str) -> web.Response:
    return web.Response(
        status=status,
        body=kbs.ErrorInformation.of(variant, detail).to_json(),
        content_type="application/json",
    )


@pytest.fixture
async def odd() -> AsyncIterator[tuple[OddKbs, str]]:
    fake = OddKbs()
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    yield fake, str(server.make_url("")).rstrip("/")
    await server.close()


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def client(url: str, **kwargs: Any) -> KbsClient:
    return KbsClient(url, evidence_provider=AttesterEvidence(SampleAttester()), **kwargs)


async def test_happy_path_sends_the_session_cookie_everywhere(odd: tuple[OddKbs, str]) -> None:
    fake, url = odd
    async with client(url) as guest:
        assert await guest.get_resource("a/b/c") == SECRET
    assert fake.requests == [
        ("auth", None),
        ("attest", "kbs-session-id=s1"),
        ("resource", "kbs-session-id=s1"),
    ]
    attestation = fake.attestations[0]
    assert attestation["init-data"] is None
    claims = kbs.runtime_data_claims(
        NONCE, kbs.parse_tee_pubkey(attestation["runtime-data"]["tee-pubkey"]), ""
    )
    expected = kbs.runtime_data_digest(claims, "sha384")
    primary = attestation["tee-evidence"]["primary_evidence"]
    assert base64.b64decode(primary["report_data"]) == expected
    assert attestation["tee-evidence"]["additional_evidence"] == ""


async def test_selected_hash_algorithm_is_honoured(odd: tuple[OddKbs, str]) -> None:
    fake, url = odd

    def auth(request: web.Request) -> web.Response:
        response = web.json_response({"nonce": NONCE, "extra-params": {"selected-hash-algorithm": "SHA512"}})
        response.set_cookie(kbs.SESSION_COOKIE, "x")
        return response

    fake.auth = auth
    async with client(url) as guest:
        await guest.get_token()
    attestation = fake.attestations[0]
    claims = kbs.runtime_data_claims(
        NONCE, kbs.parse_tee_pubkey(attestation["runtime-data"]["tee-pubkey"]), ""
    )
    primary = attestation["tee-evidence"]["primary_evidence"]
    assert base64.b64decode(primary["report_data"]) == kbs.runtime_data_digest(claims, "sha512")


def _challenge_with(cookie: str | None, body: bytes | None = None) -> Callable[[web.Request], web.Response]:
    def auth(request: web.Request) -> web.Response:
        response = web.Response(body=body or kbs.Challenge(NONCE).to_json(), content_type="application/json")
        if cookie is not None:
            response.headers["Set-Cookie"] = cookie
        return response

    return auth


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (_challenge_with(None), "no kbs-session-id cookie"),
        (_challenge_with('kbs-session-id="a b"'), "characters"),
        (_challenge_with("kbs-session-id=ok", b"not json"), "challenge unusable"),
        (_challenge_with("kbs-session-id=ok", b'{"nonce": 1, "extra-params": ""}'), "challenge unusable"),
        (
            _challenge_with(
                "kbs-session-id=ok", b'{"nonce": "n", "extra-params": {"selected-hash-algorithm": "md5"}}'
            ),
            "md5",
        ),
        (
            lambda r: _error(401, "AttestationError", "KBS Client Protocol Version Mismatch"),
            "Version Mismatch",
        ),
        (lambda r: web.Response(status=500, text="internal trouble"), "internal trouble"),
    ],
)
async def test_handshake_failures_are_retried_then_reported(
    odd: tuple[OddKbs, str], auth: Callable[[web.Request], web.Response], message: str
) -> None:
    fake, url = odd
    fake.auth = auth
    sleeps = Sleeps()
    async with client(url, rcar_attempts=3, retry_delay=0.25, sleep=sleeps) as guest:
        with pytest.raises(RcarHandshakeError, match=message):
            await guest.get_token()
    assert [path for path, _ in fake.requests] == ["auth"] * 3
    assert sleeps.calls == [0.25, 0.25]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda r, d: web.json_response({"tok": "x"}), "attestation response unusable"),
        (lambda r, d: web.json_response({"token": "not-a-jwt"}), "not a JWT"),
        (lambda r, d: _error(401, "AttestationError", "evidence refused"), "evidence refused"),
    ],
)
async def test_attest_failures(
    odd: tuple[OddKbs, str], answer: Callable[..., web.Response], message: str
) -> None:
    fake, url = odd
    fake.attest = answer
    async with client(url, rcar_attempts=1) as guest:
        with pytest.raises(RcarHandshakeError, match=message):
            await guest.get_token()


async def test_attest_may_renew_the_cookie(odd: tuple[OddKbs, str]) -> None:
    fake, url = odd

    def renew(request: web.Request, doc: dict[str, Any]) -> web.Response:
        response = web.json_response({"token": _token()})
        response.set_cookie(kbs.SESSION_COOKIE, "renewed")
        return response

    fake.attest = renew
    async with client(url) as guest:
        await guest.get_resource("a/b/c")
    assert fake.requests[-1] == ("resource", "kbs-session-id=renewed")


async def test_repeated_401_reattests_then_gives_up(odd: tuple[OddKbs, str]) -> None:
    fake, url = odd
    fake.resource = lambda r: _error(401, "TokenNotFound", "session gone")
    async with client(url) as guest:
        with pytest.raises(KbsUnauthorized, match="session gone") as refused:
            await guest.get_resource("a/b/c")
    assert refused.value.error_type == "TokenNotFound"
    assert [path for path, _ in fake.requests].count("auth") == 3  # once up front, twice after a 401
    assert [path for path, _ in fake.requests].count("resource") == 3


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (lambda r: _error(404, "PluginNotFound", "no plugin"), ResourceNotFound, "no plugin"),
        (lambda r: web.Response(status=500, text="boom"), KbsHttpError, "boom"),
        (lambda r: web.Response(status=502, text="\xff" * 2000), KbsHttpError, "502"),
        (lambda r: web.json_response({"not": "a jwe"}), JweError, "JWE"),
        (lambda r: web.Response(body=b"x" * (MAX_RESPONSE_BYTES + 1)), KbsResponseError, "exceeds"),
    ],
)
async def test_resource_failures(
    odd: tuple[OddKbs, str],
    answer: Callable[[web.Request], web.Response],
    error: type[Exception],
    message: str,
) -> None:
    fake, url = odd
    fake.resource = answer
    async with client(url) as guest:
        with pytest.raises(error, match=message):
            await guest.get_resource("a/b/c")


async def test_valid_token_is_reused_and_expired_one_renewed(odd: tuple[OddKbs, str]) -> None:
    fake, url = odd
    fake.attest = lambda r, d: web.json_response({"token": _token(exp=1)})  # expired at once
    async with client(url) as guest:
        await guest.get_token()
        await guest.get_token()
    assert [path for path, _ in fake.requests].count("auth") == 2
    fake.requests.clear()
    fake.attest = None
    async with client(url) as guest:
        await guest.get_token()
        await guest.get_token()
    assert [path for path, _ in fake.requests].count("auth") == 1


async def test_unreachable_kbs_and_bad_construction() -> None:
    async with client("http://127.0.0.1:9", rcar_attempts=1) as guest:
        with pytest.raises(RcarHandshakeError, match="failed"):
            await guest.get_token()
    with pytest.raises(KbsConnectionError, match="http"):
        client("ftp://kbs")
    with pytest.raises(KbsClientError, match="evidence provider"):
        KbsClient("http://kbs", token=_token())
    async with KbsClient("http://127.0.0.1:9", token=_token(), tee_key=TeeKeyPair.generate()) as passport:
        with pytest.raises(KbsConnectionError):
            await passport.get_resource("a/b/c")
