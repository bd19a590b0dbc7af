"""Resource URIs/paths, guest-side token parsing and admin token minting."""

from __future__ import annotations

import contextlib
import json
import string
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey

from kbs.client.admin import mint_admin_token
from kbs.jwt import JwtError, load_public_key_pem, verify_signature
from kbs.jwt import parse as parse_jwt
from protocols.kbs import b64url_encode
from protocols.kbs_client.errors import AdminKeyError, ResourcePathError, TokenFormatError
from protocols.kbs_client.resource_uri import ResourceUri, parse_resource_path, parse_resource_uri
from protocols.kbs_client.token import Token
from tests.verifier.verdicts import FORMAT, JWS_MESSAGES, jws_refusal

SEGMENT = st.from_regex(r"[A-Za-z0-9_\-]{1,8}[A-Za-z0-9_\-.]{0,8}", fullmatch=True)


@pytest.mark.parametrize(
    ("uri", "plugin", "path", "address", "query"),
    [
        ("kbs:///default/key/one", "resource", ("default", "key", "one"), "", None),
        (
            "kbs://kbs.example:8080/my_repo/Type-1/tag.v2",
            "resource",
            ("my_repo", "Type-1", "tag.v2"),
            "kbs.example:8080",
            None,
        ),
        ("kbs+pkcs11:///wrapped/key", "pkcs11", ("wrapped", "key"), "", None),
        ("kbs:///a/b/c?version=1.0&x=y", "resource", ("a", "b", "c"), "", "version=1.0&x=y"),
        ("kbs://[::1]:8080/a/b/c", "resource", ("a", "b", "c"), "[::1]:8080", None),
    ],
)
def test_resource_uris(uri: str, plugin: str, path: tuple[str, ...], address: str, query: str | None) -> None:
    parsed = parse_resource_uri(uri)
    assert parsed == ResourceUri(plugin=plugin, path=path, kbs_address=address, query=query)
    assert str(parsed) == uri
    tail = f"{plugin}/{'/'.join(path)}"
    assert parsed.endpoint() == (tail if query is None else f"{tail}?{query}")


@pytest.mark.parametrize(
    "uri",
    [
        "default/key/one",
        "http:///a/b/c",
        "kbs+:///a/b/c",
        "kbs:///a/b",
        "kbs:///a/b/c/d",
        "kbs:///a/../c",
        "kbs:///a/./c",
        "kbs:///a/b/.hidden",
        "kbs:///a/%2F/c",
        "kbs:///a//c",
        "kbs://",
        "kbs://host",
        "kbs://ho st/a/b/c",
        "kbs:///a/b/c?x=<script>",
        "kbs:///a/b/c#frag",
        "kbs+pkcs11:///",
        "kbs:///" + "a" * 5000,
    ],
)
def test_bad_resource_uris(uri: str) -> None:
    with pytest.raises(ResourcePathError):
        parse_resource_uri(uri)


def test_bare_paths() -> None:
    assert parse_resource_path("default/key/one").endpoint() == "resource/default/key/one"
    assert parse_resource_path("/default/key/one").resource_path == "default/key/one"
    for bad in ("default/key", "a/b/c/d", "a/b/..", "", "a/b/c?x=1", "a/b/c d"):
        with pytest.raises(ResourcePathError):
            parse_resource_path(bad)


@given(SEGMENT, SEGMENT, SEGMENT)
def test_valid_paths_round_trip(repo: str, kind: str, tag: str) -> None:
    uri = parse_resource_path(f"{repo}/{kind}/{tag}")
    assert parse_resource_uri(str(uri)) == uri


@given(st.text(alphabet=string.printable + "é/", max_size=80))
def test_any_text_parses_or_is_refused_cleanly(text: str) -> None:
    for parse in (parse_resource_uri, parse_resource_path):
        try:
            uri = parse(text)
        except ResourcePathError:
            continue
        for segment in uri.path:
            assert segment not in (".", "..") and "/" not in segment and segment


def _jwt(claims: object) -> str:
    return f"{b64url_encode(b'{}')}.{b64url_encode(json.dumps(claims).encode())}.sig"


def test_token_validity_window() -> None:
    token = Token.parse(_jwt({"exp": 2000, "nbf": 1000, "sub": "x"}))
    assert (token.exp, token.nbf) == (2000.0, 1000.0)
    assert token.is_valid(now=1500)
    assert not token.is_valid(now=2001)
    assert not token.is_valid(now=999)
    assert Token.parse(_jwt({})).is_valid()


@pytest.mark.parametrize(
    "content",
    [
        "",
        "a.b",
        "a.b.c.d",
        "x.!!!.y",
        _jwt([1, 2]),
        _jwt({"exp": "soon"}),
        _jwt({"exp": True}),
        _jwt({"exp": 10**400}),
        "x." + b64url_encode(b"{not json") + ".y",
        "x." + b64url_encode(b'{"exp": NaN}') + ".y",
        "a." + "b" * (1024 * 1024) + ".c",
    ],
)
def test_bad_tokens(content: str) -> None:
    with pytest.raises(TokenFormatError):
        Token.parse(content)


@given(st.text(max_size=200))
def test_token_parser_only_raises_its_error(content: str) -> None:
    with contextlib.suppress(TokenFormatError):
        Token.parse(content)


def _pem(key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_admin_token_ed25519_verifies_independently() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    token = mint_admin_token(_pem(key), role="admin", now=time.time())
    decoded = jwt.decode(token, OKPKey.import_key(_pem(key)), algorithms=["EdDSA"])
    assert decoded.header == {"alg": "EdDSA", "typ": "JWT"}
    assert decoded.claims["role"] == "admin"
    assert decoded.claims["exp"] - decoded.claims["iat"] == 7200
    assert decoded.claims["nbf"] == decoded.claims["iat"]


def test_admin_token_es256_verifies_independently() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    token = mint_admin_token(_pem(key), role="operator", lifetime=60, now=1_000_000)
    decoded = jwt.decode(token, ECKey.import_key(_pem(key)), algorithms=["ES256"])
    assert decoded.claims == {"iat": 1_000_000, "nbf": 1_000_000, "exp": 1_000_060, "role": "operator"}


_ADMIN_KEYS = [ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())]


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(_ADMIN_KEYS), st.data(), st.integers(min_value=1, max_value=127))
def test_any_changed_byte_of_a_minted_admin_token_is_refused_for_its_reason(
    key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey, data: st.DataObject, mask: int
) -> None:
    """What the KBS checks of an admin token (kbs.jwt): the genuine one verifies; a changed byte is a
    format error when a part no longer decodes, else an alg or signature failure."""
    token = mint_admin_token(_pem(key), now=time.time())
    public = load_public_key_pem(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "admin key",
    )
    verify_signature(parse_jwt(token), public)
    raw = bytearray(token.encode("ascii"))
    raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] ^= mask
    changed = raw.decode("ascii")
    reason = jws_refusal(token, changed)[0]
    if reason == FORMAT:
        with pytest.raises(JwtError):
            parse_jwt(changed)
    else:
        with pytest.raises(JwtError, match=JWS_MESSAGES[reason]):
            verify_signature(parse_jwt(changed), public)


def test_admin_keys_that_cannot_sign_are_refused() -> None:
    for key in (
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ):
        with pytest.raises(AdminKeyError, match="Ed25519 or EC P-256"):
            mint_admin_token(_pem(key))
    with pytest.raises(AdminKeyError, match="PEM"):
        mint_admin_token(b"garbage")
