"""The init data the agent binds and presents: the pod's initdata TOML and its digest.

Peer pods deliver it as `/run/peerpod/initdata` (base64 of gzip of the TOML) with its hex digest in
`/run/peerpod/initdata.digest` (both written by process-user-data); upstream's agent also takes a
plain TOML file (`--initdata-toml`) or just a digest (`--initdata-digest`, base64). The digest is
what the hardware measured at launch (SNP HOST_DATA, TDX MR_CONFIG_ID) or what gets extended into
PCR 8 (vTPM); the TOML travels in the attestation so the KBS can check it and expose its claims.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from pathlib import Path

from podvm.attestation_agent.errors import InitDataError
from protocols.initdata import InitDataError as InitDataFormatError
from protocols.initdata import decode_initdata, parse_initdata_toml

PEERPOD_INITDATA = Path("/run/peerpod/initdata")
PEERPOD_INITDATA_DIGEST = Path("/run/peerpod/initdata.digest")
MAX_FILE_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class BoundInitData:
    digest: bytes
    toml: str | None = None


def from_peerpod_files(
    initdata: Path = PEERPOD_INITDATA, digest_file: Path = PEERPOD_INITDATA_DIGEST
) -> BoundInitData:
    """The peer-pod initdata, refusing it if the digest file written at provisioning disagrees."""
    try:
        decoded = decode_initdata(_read(initdata))
    except InitDataFormatError as exc:
        raise InitDataError(f"{initdata}: {exc}") from None
    toml = _utf8(decoded.toml, initdata)
    if digest_file.exists():
        recorded = _read(digest_file).decode("ascii", errors="replace").strip()
        if not hmac.compare_digest(recorded.lower(), decoded.digest):
            raise InitDataError(f"{digest_file} does not match the digest of {initdata}")
    return BoundInitData(digest=bytes.fromhex(decoded.digest), toml=toml)


def from_toml_file(path: Path) -> BoundInitData:
    """Upstream `--initdata-toml`: a plain initdata TOML document."""
    raw = _read(path)
    try:
        parsed = parse_initdata_toml(raw)
    except InitDataFormatError as exc:
        raise InitDataError(f"{path}: {exc}") from None
    return BoundInitData(digest=bytes.fromhex(parsed.digest), toml=_utf8(raw, path))


def from_digest(text: str) -> BoundInitData:
    """Upstream `--initdata-digest`: the digest alone, base64 (standard alphabet)."""
    try:
        digest = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InitDataError("init-data digest is not base64") from None
    if len(digest) not in (32, 48, 64):
        raise InitDataError(f"init-data digest is {len(digest)} bytes, not a SHA-256/384/512 digest")
    return BoundInitData(digest=digest)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise InitDataError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise InitDataError(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    return data


def _utf8(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InitDataError(f"{path} is not UTF-8") from None
