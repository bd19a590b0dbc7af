"""protocols.kbs: message shapes as kbs-types serializes them, the runtime-data binding, strict parsing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given
from hypothesis import strategies as st

from protocols import kbs, strictjson


def ec_jwk() -> kbs.EcPublicJwk:
    key = kbs.tee_pubkey_of(ec.generate_private_key(ec.SECP256R1()).public_key())
    assert isinstance(key, kbs.EcPublicJwk)
    return key


def test_upstream_canonical_json_vector() -> None:
    # attestation-service/src/lib.rs test: canonical form and its SHA-384.
    value = {"b": 1, "a": "test", "c": {"d": "e"}}
    assert kbs.canonical_json(value) == b'{"a":"test","b":1,"c":{"d":"e"}}'
    assert kbs.runtime_data_digest(value).hex() == (
        "e71ce8e70d814ba6639c3612ebee0ff1f76f650f8dbb5e47157e0f3f525cd22c4597480a186427c813ca941da78870c3"
    )


def test_binding_object_and_padding() -> None:
    jwk = ec_jwk()
    claims = kbs.runtime_data_claims("n0nce", jwk, "")
    assert claims == {"tee-pubkey": jwk.to_json(), "nonce": "n0nce", "additional-evidence": ""}
    assert "additional-evidence" not in kbs.runtime_data_claims("n0nce", jwk, None)
    text = json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    digest = kbs.runtime_data_digest(claims)
    assert digest == hashlib.sha384(text).digest()
    assert kbs.report_data(digest) == digest + bytes(16)
    assert kbs.report_data(hashlib.sha512(text).digest(), 48) == hashlib.sha512(text).digest()[:48]
    assert kbs.runtime_data_hash_algorithm("se") == "sha512"
    assert kbs.runtime_data_hash_algorithm("snp") == "sha384"


def test_messages_round_trip_with_upstream_field_names() -> None:
    request = kbs.Request(tee="snp", extra_params={"supported-hash-algorithms": ["sha384"]})
    assert json.loads(request.to_json()) == {
        "version": "0.4.0",
        "tee": "snp",
        "extra-params": {"supported-hash-algorithms": ["sha384"]},
    }
    assert kbs.parse_request(request.to_json()) == request
    challenge = kbs.Challenge(nonce=base64.b64encode(bytes(32)).decode())
    assert json.loads(challenge.to_json()) == {"nonce": challenge.nonce, "extra-params": ""}
    assert kbs.parse_challenge(challenge.to_json()) == challenge
    assert challenge.hash_algorithm() == "sha384"
    se = kbs.Challenge("x", {"selected-hash-algorithm": "sha512"})
    assert se.hash_algorithm() == "sha512"
    attestation = kbs.Attestation(
        runtime_data=kbs.RuntimeData("x", ec_jwk()),
        tee_evidence=kbs.CompositeEvidence({"svn": "1"}, ""),
        init_data=kbs.InitData("toml", 'version = "0.1.0"'),
    )
    doc = json.loads(attestation.to_json())
    assert set(doc) == {"init-data", "runtime-data", "tee-evidence"}
    assert set(doc["tee-evidence"]) == {"primary_evidence", "additional_evidence"}
    assert kbs.parse_attestation(attestation.to_json()) == attestation
    no_init = {k: v for k, v in doc.items() if k != "init-data"}
    assert kbs.parse_attestation(json.dumps(no_init)).init_data is None
    assert kbs.parse_token_response(kbs.token_response("a.b.c")) == "a.b.c"
    error = kbs.ErrorInformation.of("PolicyDeny", "Access denied by policy")
    assert json.loads(error.to_json()) == {
        "type": "https://github.com/confidential-containers/kbs/errors/PolicyDeny",
        "detail": "Access denied by policy",
    }
    assert kbs.parse_error(error.to_json()).variant == "PolicyDeny"


def test_jwk_keeps_only_upstream_members_and_converts_keys() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = kbs.tee_pubkey_of(private.public_key())
    extra = {**jwk.to_json(), "kid": "k1", "use": "enc"}
    parsed = kbs.parse_tee_pubkey(extra)
    assert parsed == jwk and "kid" not in parsed.to_json()
    assert parsed.public_key() == private.public_key()
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = kbs.tee_pubkey_of(rsa_key)
    assert rsa_jwk.to_json()["alg"] == "RSA-OAEP-256" and rsa_jwk.to_json()["e"] == "AQAB"
    assert kbs.parse_tee_pubkey(rsa_jwk.to_json()).public_key() == rsa_key


def test_off_curve_and_short_keys_are_refused() -> None:
    jwk = ec_jwk()
    off_curve = kbs.EcPublicJwk(jwk.crv, jwk.alg, jwk.x, kbs.b64url_encode(bytes(31) + b"\x01"))
    with pytest.raises(kbs.KbsProtocolError, match="not on P-256"):
        off_curve.public_key()
    with pytest.raises(kbs.KbsProtocolError, match="32 bytes"):
        kbs.EcPublicJwk("P-256", jwk.alg, jwk.x[:-3], jwk.y).public_key()
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(kbs.KbsProtocolError, match="1024 bits, 2048 to 4096 supported"):
        kbs.tee_pubkey_of(small).public_key()
    with pytest.raises(kbs.KbsProtocolError, match="kty"):
        kbs.parse_tee_pubkey({"kty": "OKP", "crv": "X25519", "x": "AA"})


def rsa_jwk(n: int, e: int) -> kbs.RsaPublicJwk:
    def b64(value: int) -> str:
        return kbs.b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))

    return kbs.RsaPublicJwk(kbs.ALG_RSA_OAEP_256, b64(n), b64(e))


@pytest.mark.parametrize(
    ("bits", "e", "message"),
    [
        (2048, 3, None),
        (4096, 65537, None),
        (4097, 65537, "4097 bits, 2048 to 4096 supported"),
        (8192, 65537, "8192 bits"),
        (2048, 65536, "exponent must be odd"),
        (2048, 1, "exponent must be odd, from 3"),
        (2048, 2**33 + 1, "to 2\\^33 - 1"),
    ],
)
def test_rsa_tee_key_limits(bits: int, e: int, message: str | None) -> None:
    """Any odd number of the right size is a modulus RSA-OAEP can encrypt to: no key generation needed."""
    n = secrets.randbits(bits) | 1 | (1 << (bits - 1))
    if message is None:
        assert rsa_jwk(n, e).public_key().public_numbers().n == n
    else:
        with pytest.raises(kbs.KbsProtocolError, match=message):
            rsa_jwk(n, e).public_key()


def test_an_even_rsa_modulus_is_refused() -> None:
    n = secrets.randbits(2048) | (1 << 2047)
    with pytest.raises(kbs.KbsProtocolError, match="modulus is even"):
        rsa_jwk(n & ~1, 65537).public_key()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        ('{"\\udc00": 1}', "lone UTF-16 surrogate"),
        ('["\\ud83d\\ude00", "\\\\ud800"]', None),  # a surrogate pair; an escaped backslash
        (str(2**64), "outside the 64-bit range"),
        (str(2**64 - 1), None),
        (str(-(2**63)), None),
        (str(-(2**63) - 1), "outside the 64-bit range"),
        ("9" * 5000, "outside the 64-bit range"),
        ("1e999", "too large for a double"),
        ("-1E400", "too large for a double"),
        ("1e308", None),
        ("NaN", "NaN is not valid JSON"),
        ("-Infinity", "-Infinity is not valid JSON"),
        ("[" * 128 + "]" * 128, None),
        ("[" * 129 + "]" * 129, "nested too deeply"),
        ("[" * 300 + "]" * 300, "nested too deeply"),  # orjson reads it, but cannot write it again
        ('{"a":' * 300 + "1" + "}" * 300, "nested too deeply"),
        ('{"a":' * 129 + "1" + "}" * 129, "nested too deeply"),
        ("[" * 100_000, "nested too deeply|not JSON"),
        ('{"a": 1, "a": 1}', "duplicate field 'a'"),
    ],
)
def test_strict_json(text: str, message: str | None) -> None:
    for data in (text, text.encode()):
        if message is None:
            strictjson.loads(data)
        else:
            with pytest.raises(strictjson.StrictJsonError, match=message):
                strictjson.loads(data)


# JSON text with what the fast path must not be fooled by: duplicate keys, colons in keys and
# values, a colon or a key's letter written as an escape, long digit runs, lone surrogates, nesting.
_json_tokens = st.sampled_from(
    [
        '"a"',
        '"b"',
        '"a:"',
        '":"',
        '"\\u003a"',
        '"\\u003A"',
        '"\\u0061"',
        '"\\ud800"',
        "1",
        str(2**64),
        str(-(2**63) - 1),
        str(2**64 - 1),
        "1.5",
        "1e999",
        '"12345678901234567890123"',  # a long digit run inside a string
    ]
)


@st.composite
def _json_texts(draw: st.DrawFn, depth: int = 0) -> str:
    if depth > 3 or draw(st.booleans()):
        return draw(_json_tokens)
    if draw(st.booleans()):
        return "[" + ",".join(draw(st.lists(_json_texts(depth + 1), max_size=3))) + "]"
    keys = draw(st.lists(st.sampled_from(['"a"', '"b"', '"a:"', '"\\u0061"', '"\\u003a"']), max_size=4))
    return "{" + ",".join(f"{key}:{draw(_json_texts(depth + 1))}" for key in keys) + "}"


def _outcome(load: object, text: str) -> object:
    try:
        return ("value", repr(load(text)))  # type: ignore[operator]
    except strictjson.StrictJsonError as exc:
        return ("refused", str(exc))


@given(_json_texts())
def test_the_fast_strict_json_path_reads_as_the_exact_one(text: str) -> None:
    """orjson with the colon count (`strictjson._fast`) accepts exactly what the exact parser does,
    with the same value, and refuses with the same words."""
    assert _outcome(strictjson.loads, text) == _outcome(strictjson.exact_loads, text)


@pytest.mark.parametrize(
    "text",
    ['{"a":"x:y","a":"z"}', '{"a":"\\u003a","b":1,"b":2}', '{"\\u0061":1,"a":2}', '{"a":{"b":1,"b":2}}'],
)
def test_duplicate_keys_hidden_by_colons_or_escapes_are_refused(text: str) -> None:
    with pytest.raises(strictjson.StrictJsonError, match="duplicate field"):
        strictjson.loads(text)


def test_strict_json_refuses_a_raw_surrogate_in_a_str() -> None:
    with pytest.raises(strictjson.StrictJsonError, match="surrogate"):
        strictjson.loads('"\ud800"')


@pytest.mark.parametrize(
    ("version", "message"),
    [
        ("0.4.0", None),
        ("0.4.0+build.7", None),
        ("0.3.0", "Version Mismatch: expect =0.4.0 while the request is 0.3.0"),
        ("0.4.0-rc1", "Version Mismatch"),
        ("1.0.0", "Version Mismatch"),
        ("0.4", "failed to parse"),
        ("00.4.0", "failed to parse"),
        ("", "failed to parse"),
    ],
)
def test_version_check(version: str, message: str | None) -> None:
    if message is None:
        kbs.check_version(version)
    else:
        with pytest.raises(kbs.KbsProtocolError, match=message):
            kbs.check_version(version)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff", "not UTF-8"),
        (b"{", "not JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"version":"0.4.0","tee":"snp"}', "missing field 'extra-params'"),
        (b'{"version":4,"tee":"snp","extra-params":""}', "'version' must be a string"),
        (b'{"version":"0.4.0","tee":"sev","extra-params":""}', "unknown tee"),
        (b'{"version":"0.4.0","version":"0.4.0","tee":"snp","extra-params":""}', "duplicate field"),
        (b'{"version":"0.4.0","tee":"snp","extra-params":NaN}', "NaN is not valid JSON"),
        (b"[" * 100_000, "not usable JSON|not JSON"),
    ],
)
def test_request_parse_errors(body: bytes, message: str) -> None:
    with pytest.raises(kbs.KbsProtocolError, match=message):
        kbs.parse_request(body)


def test_attestation_parse_errors() -> None:
    good = json.loads(
        kbs.Attestation(kbs.RuntimeData("n", ec_jwk()), kbs.CompositeEvidence({}, "")).to_json()
    )
    for path, value, message in [
        (("runtime-data",), None, "runtime-data must be a JSON object"),
        (("runtime-data", "nonce"), 1, "'nonce' must be a string"),
        (("runtime-data", "tee-pubkey"), "k", "tee-pubkey must be a JSON object"),
        (("tee-evidence", "additional_evidence"), {}, "'additional_evidence' must be a string"),
        (("init-data",), {"format": "toml"}, "missing field 'body'"),
    ]:
        doc = json.loads(json.dumps(good))
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(kbs.KbsProtocolError, match=message):
            kbs.parse_attestation(json.dumps(doc))
    evidence = kbs.CompositeEvidence({}, '{"nvidia": {}, "sev": {}}')
    with pytest.raises(kbs.KbsProtocolError, match="unknown tee 'sev'"):
        evidence.additional()
    assert kbs.CompositeEvidence({}, '{"nvidia": {"a": 1}}').additional() == {"nvidia": {"a": 1}}


def test_jwe_response_parse() -> None:
    header = kbs.b64url_encode(b'{"alg":"RSA-OAEP-256","enc":"A256GCM"}')
    jwe = kbs.JweResponse(header, b"k" * 256, b"i" * 12, b"c", b"t" * 16)
    assert kbs.parse_jwe_response(jwe.to_json()) == jwe
    assert jwe.header() == {"alg": "RSA-OAEP-256", "enc": "A256GCM"}
    doc = json.loads(jwe.to_json())
    doc["iv"] += "="
    with pytest.raises(kbs.KbsProtocolError, match="JWE iv is not unpadded base64url"):
        kbs.parse_jwe_response(json.dumps(doc))


@given(st.binary(max_size=64))
def test_b64url_round_trip(data: bytes) -> None:
    assert kbs.b64url_decode(kbs.b64url_encode(data), "x") == data


@given(st.text(max_size=12))
def test_b64url_decode_only_raises_protocol_errors(text: str) -> None:
    with contextlib.suppress(kbs.KbsProtocolError):
        kbs.b64url_decode(text, "x")


@given(st.binary(max_size=300))
def test_parsers_only_raise_protocol_errors(data: bytes) -> None:
    for parse in (kbs.parse_request, kbs.parse_challenge, kbs.parse_attestation, kbs.parse_jwe_response):
        with contextlib.suppress(kbs.KbsProtocolError):
            parse(data)
