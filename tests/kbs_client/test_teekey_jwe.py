"""TEE key pairs and JWE resource decryption, checked against an independent JOSE implementation."""

from __future__ import annotations

import base64
import contextlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.kbs import b64url_decode, b64url_encode, parse_tee_pubkey
from protocols.kbs_client.errors import JweError, TeeKeyError
from protocols.kbs_client.teekey import ALGORITHM_EC_P256, ALGORITHM_EC_P521, ALGORITHM_RSA, TeeKeyPair
from tests.kbs_client.jose import encrypt_for

ALGORITHMS = (ALGORITHM_EC_P256, ALGORITHM_EC_P521, ALGORITHM_RSA)
SECRET = b"\x00top secret \xff" * 50


@pytest.fixture(scope="module", params=ALGORITHMS)
def key(request: pytest.FixtureRequest) -> TeeKeyPair:
    return TeeKeyPair.generate(request.param)


@pytest.fixture(scope="module")
def ec_key() -> TeeKeyPair:
    return TeeKeyPair.generate(ALGORITHM_EC_P256)


def _members(body: bytes) -> dict[str, Any]:
    return dict(json.loads(body))


def _header(body: bytes) -> dict[str, Any]:
    return dict(json.loads(b64url_decode(_members(body)["protected"], "protected")))


def _with_header(body: bytes, **changes: object) -> bytes:
    doc = _members(body)
    header = {**_header(body), **changes}
    doc["protected"] = b64url_encode(json.dumps(header).encode())
    return json.dumps(doc).encode()


def test_decrypts_what_an_independent_library_encrypts(key: TeeKeyPair) -> None:
    assert key.decrypt_response(encrypt_for(key.public_jwk(), SECRET)) == SECRET
    assert key.decrypt_response(encrypt_for(key.public_jwk(), b"")) == b""


def test_public_jwk_is_upstreams_tee_pubkey(key: TeeKeyPair) -> None:
    jwk = key.public_jwk()
    assert parse_tee_pubkey(jwk) == key.public_key
    if jwk["kty"] == "EC":
        assert jwk["alg"] == "ECDH-ES+A256KW"
        size = {"P-256": 32, "P-521": 66}[jwk["crv"]]
        assert len(b64url_decode(jwk["x"], "x")) == len(b64url_decode(jwk["y"], "y")) == size
    else:
        assert jwk["alg"] == "RSA-OAEP-256"
        assert jwk["e"] == "AQAB"
        assert len(b64url_decode(jwk["n"], "n")) == 256


def test_default_is_p256() -> None:
    jwk = TeeKeyPair.generate().public_jwk()
    assert (jwk["kty"], jwk["crv"]) == ("EC", "P-256")


def test_pem_round_trip_in_upstreams_formats(key: TeeKeyPair) -> None:
    pem = key.to_pem()
    expected = (
        "-----BEGIN RSA PRIVATE KEY-----"
        if key.public_jwk()["kty"] == "RSA"
        else "-----BEGIN PRIVATE KEY-----"
    )
    assert pem.startswith(expected)
    again = TeeKeyPair.from_pem(pem)
    assert again.public_jwk() == key.public_jwk()
    assert again.decrypt_response(encrypt_for(key.public_jwk(), SECRET)) == SECRET


def test_another_key_cannot_decrypt(key: TeeKeyPair) -> None:
    other = TeeKeyPair.generate(ALGORITHMS[ALGORITHMS.index(_algorithm(key))])
    with pytest.raises(JweError):
        other.decrypt_response(encrypt_for(key.public_jwk(), SECRET))


def _algorithm(key: TeeKeyPair) -> str:
    jwk = key.public_jwk()
    if jwk["kty"] == "RSA":
        return ALGORITHM_RSA
    return ALGORITHM_EC_P256 if jwk["crv"] == "P-256" else ALGORITHM_EC_P521


@pytest.mark.parametrize("member", ["ciphertext", "tag", "iv", "encrypted_key"])
def test_tampering_any_member_is_refused(ec_key: TeeKeyPair, member: str) -> None:
    doc = _members(encrypt_for(ec_key.public_jwk(), SECRET))
    raw = bytearray(b64url_decode(doc[member], member))
    raw[0] ^= 1
    doc[member] = b64url_encode(bytes(raw))
    with pytest.raises(JweError):
        ec_key.decrypt_response(json.dumps(doc))


def test_protected_header_is_authenticated(ec_key: TeeKeyPair) -> None:
    body = encrypt_for(ec_key.public_jwk(), SECRET)
    with pytest.raises(JweError, match="authentication tag"):
        ec_key.decrypt_response(_with_header(body, kid="added"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"enc": "A128GCM"}, "content encryption"),
        ({"zip": "DEF"}, "compressed"),
        ({"crit": ["exp"]}, "critical"),
        ({"alg": "RSA1_5"}, "key wrapping"),
        ({"alg": "dir"}, "key wrapping"),
        ({"epk": {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"}}, "epk"),
        ({"epk": {"kty": "OKP", "crv": "X25519", "x": "AA"}}, "epk"),
        ({"epk": "not an object"}, "epk"),
    ],
)
def test_unexpected_headers_are_refused(ec_key: TeeKeyPair, changes: dict[str, object], message: str) -> None:
    body = encrypt_for(ec_key.public_jwk(), SECRET)
    with pytest.raises(JweError, match=message):
        ec_key.decrypt_response(_with_header(body, **changes))


def test_ephemeral_key_off_the_curve_is_refused(ec_key: TeeKeyPair) -> None:
    body = encrypt_for(ec_key.public_jwk(), SECRET)
    epk = dict(_header(body)["epk"])
    y = bytearray(b64url_decode(epk["y"], "y"))
    y[-1] ^= 1
    epk["y"] = b64url_encode(bytes(y))
    with pytest.raises(JweError, match="not on"):
        ec_key.decrypt_response(_with_header(body, epk=epk))


def test_ephemeral_key_on_another_curve_is_refused(ec_key: TeeKeyPair) -> None:
    other = TeeKeyPair.generate(ALGORITHM_EC_P521)
    body = encrypt_for(other.public_jwk(), SECRET)
    with pytest.raises(JweError, match="curve"):
        ec_key.decrypt_response(body)


def test_rsa_key_refuses_ec_wrapped_response() -> None:
    rsa_key = TeeKeyPair.generate(ALGORITHM_RSA)
    body = encrypt_for(TeeKeyPair.generate().public_jwk(), SECRET)
    with pytest.raises(JweError, match="key wrapping"):
        rsa_key.decrypt_response(body)


@pytest.mark.parametrize(
    "body",
    [b"", b"[]", b"{}", b"null", b'{"protected": 1}', b"\xff\xfe", b"{" * 5000, b'{"protected":"%%%"}'],
)
def test_malformed_bodies_are_jwe_errors(ec_key: TeeKeyPair, body: bytes) -> None:
    with pytest.raises(JweError):
        ec_key.decrypt_response(body)


def test_wrong_iv_and_tag_sizes_are_refused(ec_key: TeeKeyPair) -> None:
    doc = _members(encrypt_for(ec_key.public_jwk(), SECRET))
    for member, size in (("iv", 16), ("tag", 12)):
        bad = dict(doc, **{member: b64url_encode(bytes(size))})
        with pytest.raises(JweError, match=member):
            ec_key.decrypt_response(json.dumps(bad))


def test_padded_base64_is_refused(ec_key: TeeKeyPair) -> None:
    doc = _members(encrypt_for(ec_key.public_jwk(), SECRET))
    doc["iv"] = base64.urlsafe_b64encode(b64url_decode(doc["iv"], "iv")).decode() + "=="
    with pytest.raises(JweError):
        ec_key.decrypt_response(json.dumps(doc))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
MEMBER = st.sampled_from(["protected", "encrypted_key", "iv", "ciphertext", "tag", "header", "aad"])


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | JSON_VALUES.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bodies_only_raise_jwe_errors(body: bytes) -> None:
    key = _SHARED_KEY
    with pytest.raises(JweError):
        key.decrypt_response(body)


@settings(max_examples=200, deadline=None)
@given(MEMBER, JSON_VALUES | st.text(alphabet="ABCDabcd0123-_=+/", max_size=60))
def test_mutating_a_real_response_only_raises_jwe_errors(member: str, value: object) -> None:
    doc = dict(_SHARED_RESPONSE)
    doc[member] = value
    with contextlib.suppress(JweError):
        assert _SHARED_KEY.decrypt_response(json.dumps(doc)) == SECRET


_SHARED_KEY = TeeKeyPair.generate()
_SHARED_RESPONSE = _members(encrypt_for(_SHARED_KEY.public_jwk(), SECRET))
_RSA_KEY = TeeKeyPair.generate(ALGORITHM_RSA)
_RESPONSES = [(key, _members(encrypt_for(key.public_jwk(), SECRET))) for key in (_SHARED_KEY, _RSA_KEY)]


def _header_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _refusal(member: str, original: dict[str, Any], changed: bytes) -> str:
    """The JweError message (a regex) a response whose `member` now decodes to `changed` must get:
    header checks in the order the client makes them, then the key unwrap, then the GCM tag, which
    authenticates iv, ciphertext and the protected header's text."""
    if member == "encrypted_key":
        return "unwrap of the content key failed"
    if member != "protected":
        return "authentication tag does not match"
    header = _header_object(changed)
    if header is None:
        return "not a flattened JWE"
    if not isinstance(header.get("alg"), str):
        return "has no 'alg'"
    if header.get("enc") != "A256GCM":
        return "content encryption"
    if header["alg"] != original["alg"]:
        return "key wrapping"
    if header.get("epk") != original.get("epk"):
        return "'epk'|curve|unwrap of the content key failed"  # off the curve, or another key
    return "authentication tag does not match"


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(_RESPONSES),
    st.sampled_from(["protected", "encrypted_key", "iv", "ciphertext", "tag"]),
    st.data(),
    st.integers(min_value=1, max_value=255),
)
def test_any_changed_byte_of_a_response_is_refused_for_its_member(
    response: tuple[TeeKeyPair, dict[str, Any]], member: str, data: st.DataObject, mask: int
) -> None:
    key, doc = response
    assert key.decrypt_response(json.dumps(doc)) == SECRET
    raw = bytearray(b64url_decode(doc[member], member))
    raw[data.draw(st.integers(min_value=0, max_value=len(raw) - 1))] ^= mask
    original = json.loads(b64url_decode(doc["protected"], "protected"))
    with pytest.raises(JweError, match=_refusal(member, original, bytes(raw))):
        key.decrypt_response(json.dumps({**doc, member: b64url_encode(bytes(raw))}))


def test_keys_that_do_not_fit_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(TeeKeyError, match="shorter"):
        TeeKeyPair(small)
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(TeeKeyError, match="curve"):
        TeeKeyPair(p384)
    with pytest.raises(TeeKeyError, match="unknown TEE key algorithm"):
        TeeKeyPair.generate("ML-KEM-768+A192KW")
    encrypted = p384.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    for pem in (b"not a key", encrypted, b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"):
        with pytest.raises(TeeKeyError):
            TeeKeyPair.from_pem(pem)
