"""Initdata: the TOML document a pod is started with, as it travels to the pod VM.

On the wire (pod annotation, adaptor `INITDATA`, `/run/peerpod/initdata`) it is
`base64(gzip(toml))`; the TOML is `{algorithm, version, data{filename: content}}`
(Trustee initdata spec, cloud-api-adaptor `pkg/initdata`). The digest the TEE measures is the
chosen hash of the *decompressed TOML bytes*, so the raw bytes are kept alongside the parsed form.
Decompression is capped: the input comes from the untrusted host side.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import tomllib
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

ALGORITHMS: frozenset[str] = frozenset({"sha256", "sha384", "sha512"})
# The pod VM's limits, which the adaptor checks at CreateVM so that a pod VM never refuses what it
# was given: the decompressed TOML, and /run/peerpod/initdata (base64 text and a line break).
MAX_TOML_BYTES = 256 * 1024
MAX_INITDATA_FILE_BYTES = 1024 * 1024

# Data entries the pod VM materialises under /run/peerpod (upstream `InitdDataFilesList`).
AA_CONFIG_NAME = "aa.toml"
CDH_CONFIG_NAME = "cdh.toml"
POLICY_NAME = "policy.rego"
ALLOWED_DATA_FILES: frozenset[str] = frozenset({AA_CONFIG_NAME, CDH_CONFIG_NAME, POLICY_NAME})

# What the pod VM writes when no initdata was given (upstream `generateDummyInitdata`): byte-exact,
# since its digest ends up in PCR 8 and in reference values.
DEFAULT_INITDATA_TOML = """algorithm = "sha256"
version = "0.1.0"

[data]
"aa.toml" = '''
'''"""

_GZIP_WBITS = 16 + zlib.MAX_WBITS


class InitDataError(ValueError):
    """Initdata that cannot be decoded, is too large, or does not follow the schema."""


@dataclass(frozen=True, slots=True)
class InitData:
    """Decoded initdata; `digest` is the lowercase hex hash of `toml` under `algorithm`."""

    algorithm: str
    version: str
    data: Mapping[str, str] = field(repr=False)
    toml: bytes = field(repr=False)
    digest: str


def encode_initdata(toml_text: str | bytes) -> str:
    """base64(gzip(toml)), deterministic (no timestamp in the gzip header)."""
    raw = toml_text.encode("utf-8") if isinstance(toml_text, str) else toml_text
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode("ascii")


def decode_initdata(text: str | bytes, *, max_toml_bytes: int = MAX_TOML_BYTES) -> InitData:
    """Decode and validate wire-form initdata, computing its digest."""
    raw = _gunzip(_unbase64(text), max_toml_bytes)
    return parse_initdata_toml(raw)


def initdata_from_toml(toml_text: str) -> str:
    """The wire form of raw initdata TOML (a pod annotation), refused if the pod VM would refuse it."""
    try:
        raw = toml_text.encode("utf-8")
    except UnicodeEncodeError:
        raise InitDataError("initdata TOML is not valid Unicode") from None
    if len(raw) > MAX_TOML_BYTES:
        raise InitDataError(f"initdata TOML is {len(raw)} bytes; the pod VM accepts at most {MAX_TOML_BYTES}")
    parse_initdata_toml(raw)
    return encode_initdata(raw)


def initdata_file(encoded: str) -> str:
    """The content of /run/peerpod/initdata for wire-form `encoded`, refused if the pod VM would refuse it."""
    content = encoded + "\n"
    if len(content) > MAX_INITDATA_FILE_BYTES:
        limit = MAX_INITDATA_FILE_BYTES - 1
        raise InitDataError(f"encoded initdata is {len(encoded)} bytes; the pod VM accepts at most {limit}")
    return content


def parse_initdata_toml(raw: bytes) -> InitData:
    """Validate the decompressed TOML document and hash it."""
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InitDataError(f"initdata TOML is not UTF-8 (byte offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InitDataError(f"initdata is not valid TOML: {exc}") from None
    except RecursionError:
        raise InitDataError("initdata TOML is nested too deeply") from None
    algorithm = doc.get("algorithm")
    if not isinstance(algorithm, str):
        raise InitDataError("initdata 'algorithm' must be a string")
    if algorithm not in ALGORITHMS:
        raise InitDataError(f"initdata algorithm {algorithm[:20]!r} is not one of {sorted(ALGORITHMS)}")
    version = doc.get("version", "")
    if not isinstance(version, str):
        raise InitDataError("initdata 'version' must be a string")
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise InitDataError("initdata 'data' must be a table")
    for name, value in data.items():
        if not isinstance(value, str):
            raise InitDataError(f"initdata data entry {name[:60]!r} must be a string")
    return InitData(
        algorithm=algorithm,
        version=version,
        data=MappingProxyType(dict(data)),
        toml=raw,
        digest=hashlib.new(algorithm, raw).hexdigest(),
    )


def _unbase64(text: str | bytes) -> bytes:
    # Go's base64 stream decoder, which upstream uses, skips CR and LF (cloud-config adds a newline).
    if isinstance(text, str):
        try:
            text = text.encode("ascii")
        except UnicodeEncodeError:
            raise InitDataError("initdata is not base64: non-ASCII characters") from None
    if len(text) > MAX_INITDATA_FILE_BYTES:
        raise InitDataError(f"encoded initdata exceeds {MAX_INITDATA_FILE_BYTES} bytes")
    compact = text.replace(b"\r", b"").replace(b"\n", b"")
    if not compact:
        raise InitDataError("initdata is empty")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error as exc:
        raise InitDataError(f"initdata is not base64: {exc}") from None


def _gunzip(blob: bytes, limit: int) -> bytes:
    """Inflate all gzip members of `blob`, refusing output over `limit` bytes."""
    out = bytearray()
    rest = blob
    while rest:
        inflater = zlib.decompressobj(_GZIP_WBITS)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise InitDataError(f"initdata is not gzip: {exc}") from None
        if len(out) > limit:
            raise InitDataError(f"initdata TOML exceeds {limit} bytes after decompression")
        if not inflater.eof:
            raise InitDataError("initdata gzip stream is truncated")
        rest = inflater.unused_data
    return bytes(out)
