"""The sans-IO ocicrypt pieces: upstream vectors, round trips, and fuzzing that only typed errors come
out and that tampered bytes are refused for the right reason."""

from __future__ import annotations

import base64
import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.ocicrypt import jsonbytes, keyprovider, keywrap, layer, packet, params
from protocols.ocicrypt.errors import KeyWrapError, LayerDecryptionError, MessageFormatError, OcicryptError

DATA = Path(__file__).parent / "data"
# coco_keyprovider's hard-coded `sample` KEK (crypto.rs HARDCODED_KEY).
SAMPLE_KEK = bytes.fromhex("d99b7705b0ba7a168295b3a3367270b0dd9b371bf514ca8b9ba7f0a33711daea")
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_upstream_cdh_v1_packet_parses():
    p = packet.parse_packet((DATA / "cdh-v1.json").read_bytes())
    assert p.kid == "kbs:///kbs:///default/key/1"
    assert (len(p.wrapped_data), p.iv, p.wrap_type) == (209, base64.b64decode("M02S5rumY5JybMLQ"), "A256GCM")
    assert (p.version, p.provider, p.provider_settings, p.annotations) == ("0.1.0", "kbs", {}, {})


def test_upstream_ocicrypt_rs_packet_unwraps_with_the_sample_kek():
    p = packet.parse_packet((DATA / "ocicrypt-rs-sample-kbc.json").read_bytes())
    assert p.wrap_type is not None and p.iv is not None
    private = layer.parse_private(keywrap.unwrap(SAMPLE_KEK, p.wrapped_data, p.iv, p.wrap_type))
    assert private.digest == "sha256:18be1897f9402f27c8c0eba7c86e0c00f5656db62961b5949d55f9565c42c6e7"
    assert len(private.symkey) == 32 and len(private.nonce) == 16


def test_v1_packet_written_as_coco_keyprovider_writes_it():
    wrapped, iv = keywrap.wrap(SAMPLE_KEK, b"optsdata")
    doc = json.loads(packet.AnnotationPacket("kbs:///default/key/1", wrapped, iv, "A256GCM").to_json())
    assert list(doc) == ["kid", "wrapped_data", "iv", "wrap_type"]
    assert base64.b64decode(doc["iv"]) == iv and len(iv) == 12


def test_v2_packet_round_trips():
    p = packet.AnnotationPacket("key-1", b"\x01\x02", provider="aliyun", provider_settings={"a": "b"})
    assert packet.parse_packet(p.to_json()) == p


@pytest.mark.parametrize("wrap_type", keywrap.WRAP_TYPES)
def test_wrap_unwrap(wrap_type):
    wrapped, iv = keywrap.wrap(SAMPLE_KEK, b"layer options", wrap_type)
    assert keywrap.unwrap(SAMPLE_KEK, wrapped, iv, wrap_type) == b"layer options"


def test_unwrap_refuses_wrong_kek_and_sizes():
    wrapped, iv = keywrap.wrap(SAMPLE_KEK, b"x")
    with pytest.raises(KeyWrapError, match="not the one"):
        keywrap.unwrap(bytes(32), wrapped, iv, "A256GCM")
    with pytest.raises(KeyWrapError, match="must be 32 bytes, got 8"):
        keywrap.unwrap(b"junk_key", wrapped, iv, "A256GCM")
    with pytest.raises(KeyWrapError, match="IV must be 12 bytes"):
        keywrap.unwrap(SAMPLE_KEK, wrapped, iv[:8], "A256GCM")
    with pytest.raises(KeyWrapError, match="unsupported wrap type"):
        keywrap.unwrap(SAMPLE_KEK, wrapped, iv, "A128KW")


def test_byte_fields_accept_rust_integer_arrays():
    optsdata = b'{"symkey":"..."}'
    rust_style = json.dumps({"keyunwrapresults": {"optsdata": list(optsdata)}})
    assert keyprovider.parse_unwrap_response(rust_style) == optsdata
    assert keyprovider.parse_unwrap_response(keyprovider.unwrap_response(optsdata)) == optsdata
    # What we answer is the integer-array form ocicrypt-rs requires (Go accepts it too).
    assert json.loads(keyprovider.unwrap_response(b"ab")) == {"keyunwrapresults": {"optsdata": [97, 98]}}
    assert json.loads(keyprovider.wrap_response(b"a")) == {"keywrapresults": {"annotation": [97]}}
    with pytest.raises(MessageFormatError, match="byte values"):
        keyprovider.parse_unwrap_response(json.dumps({"keyunwrapresults": {"optsdata": [256]}}))


def test_go_shaped_requests_parse():
    wrap = keyprovider.parse_request(keyprovider.wrap_request(b"opts", {"peerpods": [b"keypath=/k"]}))
    assert wrap == keyprovider.WrapRequest(b"opts", {"peerpods": [b"keypath=/k"]})
    unwrap = keyprovider.parse_request(keyprovider.unwrap_request(b"{}", {}))
    assert unwrap == keyprovider.UnwrapRequest(b"{}", {})


def test_provider_params():
    p = params.parse_params(b"keypath=/abs/kek::keyid=kbs:///default/key/1::algorithm=A256CTR")
    assert p == params.ProviderParams("/abs/kek", "kbs:///default/key/1", "A256CTR", False)
    with pytest.raises(MessageFormatError, match="algorithm"):
        params.parse_params(b"algorithm=A128GCM")
    with pytest.raises(MessageFormatError, match="key=value"):
        params.parse_params(b"keyfile=/x")


def _encrypted(plaintext: bytes) -> tuple[bytes, layer.PrivateOptions, layer.PublicOptions]:
    out = io.BytesIO()
    private, public = layer.encrypt_file(io.BytesIO(plaintext), out)
    return out.getvalue(), private, public


def test_layer_round_trip_over_several_chunks():
    plaintext = bytes(range(256)) * (layer.CHUNK_SIZE // 256 * 2 + 3)
    ciphertext, private, public = _encrypted(plaintext)
    out = io.BytesIO()
    size = layer.decrypt_file(
        io.BytesIO(ciphertext),
        out,
        layer.parse_private(private.to_json()),
        layer.parse_public(public.to_json()),
    )
    assert (size, out.getvalue()) == (len(plaintext), plaintext)


def test_streamed_check_gives_plaintext_only_after_verification():
    ciphertext, private, public = _encrypted(b"layer bytes" * 1000)
    check = layer.HmacCheck(private, public)
    check.update(ciphertext)
    with pytest.raises(LayerDecryptionError, match="not verified"):
        check.plaintext(io.BytesIO(ciphertext))
    check.verify()
    assert check.plaintext(io.BytesIO(ciphertext)).read() == b"layer bytes" * 1000


@FUZZ
@given(st.binary(min_size=1, max_size=4096), st.data())
def test_tampered_layer_is_refused_before_any_plaintext(plaintext, data):
    ciphertext, private, public = _encrypted(plaintext)
    index = data.draw(st.integers(0, len(ciphertext) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = bytearray(ciphertext)
    tampered[index] ^= flip
    out = io.BytesIO()
    with pytest.raises(LayerDecryptionError, match=layer.HMAC_MISMATCH):
        layer.decrypt_file(io.BytesIO(bytes(tampered)), out, private, public)
    assert out.getvalue() == b""


@FUZZ
@given(st.binary(max_size=512))
def test_truncated_or_extended_layer_is_refused(extra):
    ciphertext, private, public = _encrypted(b"a layer" * 10)
    for candidate in (ciphertext[: len(ciphertext) // 2], ciphertext + extra):
        if candidate == ciphertext:
            continue
        out = io.BytesIO()
        with pytest.raises(LayerDecryptionError):
            layer.decrypt_file(io.BytesIO(candidate), out, private, public)
        assert out.getvalue() == b""


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-300, 300) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
packet_like = st.fixed_dictionaries(
    {},
    optional={
        "kid": json_values | st.just("kbs:///default/key/1"),
        "wrapped_data": json_values | st.just("AAAA") | st.lists(st.integers(0, 255)),
        "iv": json_values | st.just("M02S5rumY5JybMLQ"),
        "wrap_type": json_values | st.sampled_from(keywrap.WRAP_TYPES),
        "version": json_values,
        "provider": json_values,
        "provider_settings": json_values,
        "annotations": json_values,
    },
)


@FUZZ
@given(st.one_of(st.binary(max_size=300), packet_like.map(lambda d: json.dumps(d).encode())))
def test_packet_parser_raises_only_typed_errors(raw):
    try:
        p = packet.parse_packet(raw)
    except MessageFormatError:
        return
    assert isinstance(p.kid, str) and isinstance(p.wrapped_data, bytes)
    if p.iv is not None and p.wrap_type is not None:
        with pytest.raises(OcicryptError):
            keywrap.unwrap(SAMPLE_KEK, p.wrapped_data, p.iv, p.wrap_type)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=300),
        st.fixed_dictionaries(
            {"op": st.sampled_from(["keywrap", "keyunwrap", "other"]) | json_values},
            optional={"keywrapparams": json_values, "keyunwrapparams": json_values},
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_key_provider_input_raises_only_typed_errors(raw):
    with contextlib.suppress(MessageFormatError):
        keyprovider.parse_request(raw)


@FUZZ
@given(
    st.fixed_dictionaries(
        {}, optional={"symkey": json_values, "cipheroptions": json_values, "digest": json_values}
    ).map(lambda d: json.dumps(d).encode())
    | st.binary(max_size=200)
)
def test_layer_options_raise_only_typed_errors(raw):
    for parse in (layer.parse_private, layer.parse_public):
        with contextlib.suppress(MessageFormatError):
            parse(raw)


def test_oversized_document_is_refused():
    with pytest.raises(MessageFormatError, match="larger than"):
        jsonbytes.load_object(b" " * (jsonbytes.MAX_DOCUMENT_BYTES + 1), "x")
