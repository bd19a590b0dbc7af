"""Initdata wire form (base64 of gzip of TOML), its schema, size cap and digest."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.initdata import (
    DEFAULT_INITDATA_TOML,
    MAX_TOML_BYTES,
    InitDataError,
    decode_initdata,
    encode_initdata,
)

SAMPLE = """algorithm = "sha384"
version = "0.1.0"

[data]
"aa.toml" = '''
[token_configs.kbs]
url = 'http://127.0.0.1:8080'
'''
"policy.rego" = '''
package agent_policy
default CreateContainerRequest := true
'''
"""


def _wire(raw: bytes) -> str:
    return base64.b64encode(gzip.compress(raw)).decode()


def test_round_trip_and_digest() -> None:
    decoded = decode_initdata(encode_initdata(SAMPLE))
    assert decoded.algorithm == "sha384"
    assert decoded.version == "0.1.0"
    assert dict(decoded.data) == {
        "aa.toml": "[token_configs.kbs]\nurl = 'http://127.0.0.1:8080'\n",
        "policy.rego": "package agent_policy\ndefault CreateContainerRequest := true\n",
    }
    assert decoded.toml == SAMPLE.encode()
    assert decoded.digest == hashlib.sha384(SAMPLE.encode()).hexdigest()


@pytest.mark.parametrize("algorithm", ["sha256", "sha384", "sha512"])
def test_digest_is_over_decompressed_toml_bytes(algorithm: str) -> None:
    raw = f'algorithm = "{algorithm}"\nversion = "0.1.0"\n# comments count too\n'.encode()
    decoded = decode_initdata(_wire(raw))
    assert decoded.digest == hashlib.new(algorithm, raw).hexdigest()
    assert dict(decoded.data) == {}


def test_default_initdata_is_upstreams_dummy() -> None:
    decoded = decode_initdata(encode_initdata(DEFAULT_INITDATA_TOML))
    assert (decoded.algorithm, decoded.version, dict(decoded.data)) == ("sha256", "0.1.0", {"aa.toml": ""})
    assert not DEFAULT_INITDATA_TOML.endswith("\n")
    assert decoded.digest == hashlib.sha256(DEFAULT_INITDATA_TOML.encode()).hexdigest()


def test_encoding_is_deterministic_and_standard_gzip() -> None:
    encoded = encode_initdata(SAMPLE)
    assert encoded == encode_initdata(SAMPLE.encode())
    assert gzip.decompress(base64.b64decode(encoded)) == SAMPLE.encode()


def test_line_breaks_in_base64_are_ignored_like_go() -> None:
    encoded = encode_initdata(SAMPLE)
    wrapped = "\r\n".join(encoded[i : i + 20] for i in range(0, len(encoded), 20)) + "\n"
    assert decode_initdata(wrapped).digest == decode_initdata(encoded).digest


def test_concatenated_gzip_members_are_one_document() -> None:
    first, second = b'algorithm = "sha256"\n', b'version = "1"\n'
    blob = gzip.compress(first) + gzip.compress(second)
    decoded = decode_initdata(base64.b64encode(blob))
    assert decoded.toml == first + second
    assert decoded.version == "1"


def test_size_cap_applies_after_decompression() -> None:
    header = b'algorithm = "sha256"\n#'
    at_cap = header + b"a" * (MAX_TOML_BYTES - len(header))
    assert len(decode_initdata(_wire(at_cap)).toml) == MAX_TOML_BYTES
    with pytest.raises(InitDataError, match="exceeds"):
        decode_initdata(_wire(at_cap + b"a"))
    # A small compressed blob that would inflate to 16 MiB is refused without inflating it all.
    with pytest.raises(InitDataError, match="exceeds"):
        decode_initdata(_wire(b"#" * (16 << 20)))


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        ("", "empty"),
        ("not base64!", "not base64"),
        ("QQ", "not base64"),
        ("é", "non-ASCII"),
        (base64.b64encode(b"plain text, not gzip").decode(), "not gzip"),
        (base64.b64encode(gzip.compress(b'algorithm = "sha256"')[:-6]).decode(), "truncated"),
        (base64.b64encode(gzip.compress(b'algorithm = "sha256"') + b"junk").decode(), "not gzip"),
        (_wire(b"\xff\xfe"), "not UTF-8"),
        (_wire(b"algorithm = "), "not valid TOML"),
        (_wire(b'version = "0.1.0"'), "'algorithm' must be a string"),
        (_wire(b'algorithm = "md5"'), "not one of"),
        (_wire(b"algorithm = 256"), "'algorithm' must be a string"),
        (_wire(b'algorithm = "sha256"\nversion = 1'), "'version' must be a string"),
        (_wire(b'algorithm = "sha256"\ndata = "x"'), "'data' must be a table"),
        (_wire(b'algorithm = "sha256"\n[data]\n"aa.toml" = 3'), "entry 'aa.toml' must be a string"),
        (_wire(b'algorithm = "sha256"\n[data.sub]\nx = "y"'), "entry 'sub' must be a string"),
    ],
)
def test_bad_initdata_errors(wire: str, message: str) -> None:
    with pytest.raises(InitDataError, match=message):
        decode_initdata(wire)


def test_repr_does_not_show_contents() -> None:
    decoded = decode_initdata(encode_initdata(SAMPLE))
    assert "token_configs" not in repr(decoded)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_random_input_only_raises_initdata_error(blob: bytes | str) -> None:
    with contextlib.suppress(InitDataError):
        decode_initdata(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_gzipped_payload_only_raises_initdata_error(payload: bytes) -> None:
    try:
        decoded = decode_initdata(encode_initdata(payload))
    except InitDataError:
        return
    assert decoded.toml == payload
    assert decoded.digest == hashlib.new(decoded.algorithm, payload).hexdigest()
