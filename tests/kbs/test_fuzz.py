"""Every KBS endpoint fuzzed over real HTTP: random bytes, broken and mistyped JSON, bad base64,
bodies over the 2 MB cap, random paths, methods and credentials. The answer is always a 4xx with
upstream's `ErrorInformation` JSON -- never a 500, and never a resource.

The server runs on 127.0.0.1 in a background thread; hypothesis drives a blocking HTTP client.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import kbs
from tests.kbs.support import AdminKey, Guest, RunningKbs, error_variant, start_kbs

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADMIN_ENDPOINTS = [
    ("POST", "attestation-policy"),
    ("POST", "resource-policy"),
    ("GET", "resource-policy"),
    ("POST", "reference-value"),
    ("GET", "reference-value/svn"),
    ("POST", "resource/default/key/one"),
    ("DELETE", "resource/default/key/one"),
]
GUEST_ENDPOINTS = [("POST", "auth"), ("POST", "attest"), ("GET", "resource/default/key/one")]
ALL_ENDPOINTS = ADMIN_ENDPOINTS + GUEST_ENDPOINTS


@dataclass
class Server:
    running: RunningKbs
    host: str
    port: int
    loop: asyncio.AbstractEventLoop

    @property
    def admin(self) -> AdminKey:
        return self.running.admin

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read(), response
        finally:
            connection.close()

    def session_cookie(self) -> str:
        return self.session()[0]

    def session(self) -> tuple[str, str]:
        """(cookie header value, nonce) of a new session."""
        request = kbs.Request("sample")
        status, body, response = self.request("POST", "/kbs/v0/auth", request.to_json())
        assert status == 200
        return response.headers["Set-Cookie"].split(";")[0], kbs.parse_challenge(body).nonce


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, module_backend: str) -> Iterator[Server]:
    """The KBS under fuzzing, once on each shared storage backend (`module_backend`)."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, RunningKbs] = {}

    async def start() -> None:
        holder["kbs"] = await start_kbs(Path(tmp_path_factory.mktemp("fuzz")), backend=module_backend)
        started.set()

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    running = holder["kbs"]
    host, port = running.url.removeprefix("http://").rsplit(":", 1)
    yield Server(running, host, int(port), loop)
    asyncio.run_coroutine_threadsafe(running.runner.cleanup(), loop).result(60)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def check_refusal(status: int, body: bytes, method: str, path: str) -> None:
    """A 4xx with ErrorInformation (a 200 only where the request was in fact legitimate)."""
    assert status < 500, (method, path, status, body[:300])
    if status >= 400:
        error_variant(json.loads(body))
    else:
        assert not (method == "GET" and "/resource/" in path), "a resource was released"


# ---- strategies

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
bad_base64 = st.text(alphabet="!@#$%^&*()=+/ABCab01\n", min_size=1, max_size=40)


def valid_bodies(cookie_nonce: str = "AAAA") -> dict[str, Any]:
    jwk = {"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "AA", "y": "AA"}
    return {
        "auth": {"version": "0.4.0", "tee": "sample", "extra-params": ""},
        "attest": {
            "init-data": None,
            "runtime-data": {"nonce": cookie_nonce, "tee-pubkey": jwk},
            "tee-evidence": {"primary_evidence": {"svn": "1", "report_data": ""}, "additional_evidence": ""},
        },
        "attestation-policy": {"type": "rego", "policy_id": "default_cpu", "policy": "cGFja2FnZQ"},
        "resource-policy": {"policy": "cGFja2FnZQ"},
        "reference-value": {"version": "0.1.0", "type": "sample", "payload": "e30="},
    }


@st.composite
def mistyped(draw: st.DrawFn, endpoint: str) -> bytes:
    """A valid-looking body with one field (at any depth) replaced by a random value or bad base64."""
    doc = valid_bodies()[endpoint]
    paths: list[list[str]] = []

    def walk(node: Any, prefix: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                paths.append([*prefix, key])
                walk(value, [*prefix, key])

    walk(doc, [])
    target = draw(st.sampled_from(paths))
    node = doc
    for key in target[:-1]:
        node = node[key]
    node[target[-1]] = draw(json_values | bad_base64)
    if draw(st.booleans()):
        del node[target[-1]]
    return json.dumps(doc).encode()


def bodies(endpoint: str) -> st.SearchStrategy[bytes]:
    name = endpoint.split("/")[0]
    options = [
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        st.text(max_size=100).map(str.encode),
        st.just(b'{"truncated": '),
        st.just(b"\xff\xfe not utf-8"),
        st.just(b"[" * 5000),
    ]
    if name in valid_bodies():
        options.append(mistyped(name))
    return st.one_of(options)


credentials = st.sampled_from(["none", "garbage bearer", "admin", "wrong role admin"])


def headers_for(server: Server, credential: str, cookie: str | None) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if credential == "garbage bearer":
        headers["Authorization"] = "Bearer " + base64.urlsafe_b64encode(b"x" * 50).decode() + ".e30.sig"
    elif credential == "admin":
        headers["Authorization"] = f"Bearer {server.admin.token()}"
    elif credential == "wrong role admin":
        headers["Authorization"] = f"Bearer {server.admin.token(role='guest')}"
    if cookie:
        headers["Cookie"] = cookie
    return headers


# ---- tests


@FUZZ
@given(
    endpoint=st.sampled_from(ALL_ENDPOINTS),
    data=st.data(),
    credential=credentials,
    with_session=st.booleans(),
)
def test_endpoints_refuse_garbage(
    server: Server, endpoint: tuple[str, str], data: st.DataObject, credential: str, with_session: bool
) -> None:
    method, path = endpoint
    body = data.draw(bodies(path))
    cookie = server.session_cookie() if with_session else None
    url = f"/kbs/v0/{path}"
    status, response, _ = server.request(method, url, body, headers_for(server, credential, cookie))
    check_refusal(status, response, method, url)
    if path == "attest":
        assert status == 401, response  # never a token for garbage


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
    path=st.lists(
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.%~", max_size=12), min_size=0, max_size=5
    ).map("/".join),
    query=st.text(alphabet="abc=&%20xyz", max_size=20),
    credential=credentials,
)
def test_random_paths_and_methods(
    server: Server, method: str, path: str, query: str, credential: str
) -> None:
    url = f"/kbs/v0/{path}" + (f"?{query}" if query else "")
    status, body, _ = server.request(method, url, b"", headers_for(server, credential, None))
    assert status < 500, (method, url, status, body)
    if method != "HEAD" and status >= 400:
        error_variant(json.loads(body))
    assert not (status == 200 and method == "GET" and path.startswith("resource/"))


@FUZZ
@given(
    evidence=json_values,
    pubkey=json_values | st.just({"kty": "EC", "crv": "P-256", "alg": "x"}),
    init=json_values,
)
def test_attest_with_live_session_and_random_parts(
    server: Server, evidence: Any, pubkey: Any, init: Any
) -> None:
    cookie = server.session_cookie()
    doc = {
        "init-data": init,
        "runtime-data": {"nonce": "irrelevant", "tee-pubkey": pubkey},
        "tee-evidence": {"primary_evidence": evidence, "additional_evidence": json.dumps(evidence)},
    }
    status, body, _ = server.request("POST", "/kbs/v0/attest", json.dumps(doc).encode(), {"Cookie": cookie})
    assert status == 401 and error_variant(json.loads(body)) == "AttestationError"


@pytest.mark.parametrize(("method", "path"), ALL_ENDPOINTS)
def test_bodies_over_the_cap(server: Server, method: str, path: str) -> None:
    body = b"{" + b" " * (2 * 1024 * 1024)
    headers = headers_for(server, "admin", server.session_cookie())
    status, response, _ = server.request(method, f"/kbs/v0/{path}", body, headers)
    assert status == 413, (method, path, status)
    assert error_variant(json.loads(response)) == "HTTPFailed"
    assert "2097152 byte limit" in json.loads(response)["detail"]


def test_a_real_handshake_through_the_fuzzed_server_is_still_refused_by_default(server: Server) -> None:
    """Sanity of the harness: a real handshake through the same server works end to end."""

    async def handshake() -> int:
        async with Guest(server.running.url) as guest:
            await guest.handshake()
            status, _ = await guest.resource("default/key/one")
            return status

    status = asyncio.run_coroutine_threadsafe(handshake(), server.loop).result(60)
    assert status == 401  # the default policies: sample never gets resources


# JSON text a Python parser takes but a strict one must refuse: lone surrogates, integers beyond 64
# bits, overflowing numbers, deep nesting -- as values of the evidence the KBS re-serializes.
with_surrogates = st.text(
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF) | st.characters(), max_size=4
)
unusable_json = st.one_of(
    st.recursive(
        st.integers() | with_surrogates,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(with_surrogates, inner, max_size=3),
        max_leaves=6,
    ).map(json.dumps),
    st.integers(200, 400).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(["1e999", "-1e400", str(2**64), str(-(2**63) - 1)]),
)
TEE_KEY = kbs.tee_pubkey_of(ec.generate_private_key(ec.SECP256R1()).public_key()).to_json()


@FUZZ
@given(
    value=unusable_json, body=with_surrogates, where=st.sampled_from(["primary", "additional", "init-data"])
)
def test_attest_past_the_nonce_check_with_unusable_json(
    server: Server, value: str, body: str, where: str
) -> None:
    """A live session, its nonce and a usable key: the evidence reaches the stages that re-encode it."""
    cookie, nonce = server.session()
    evidence: dict[str, Any] = {"primary_evidence": "@VALUE@", "additional_evidence": ""}
    doc: dict[str, Any] = {"runtime-data": {"nonce": nonce, "tee-pubkey": TEE_KEY}, "tee-evidence": evidence}
    if where == "additional":
        evidence.update(primary_evidence={}, additional_evidence='{"sampledevice": @VALUE@}')
        value = json.dumps(value)[1:-1]  # raw JSON as the content of a JSON string
    elif where == "init-data":
        evidence["primary_evidence"] = {}
        doc["init-data"] = {"format": "toml", "body": "@VALUE@"}
        value = json.dumps(body)  # a string that may hold lone surrogates
    marker = '"@VALUE@"' if where != "additional" else "@VALUE@"
    text = json.dumps(doc).replace(marker, value)
    status, answer, _ = server.request("POST", "/kbs/v0/attest", text.encode(), {"Cookie": cookie})
    assert status == 401, answer[:300]
    assert error_variant(json.loads(answer)) == "AttestationError"
