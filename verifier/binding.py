"""What evidence must be bound to: runtime data (-> expected report data) and init data (-> digest).

Mirrors Trustee's attestation service: raw runtime data is the expected report data as given;
structured runtime data (a JSON object such as `{"nonce","tee-pubkey"}`) is hashed in its RFC 8785
canonical form with sha256/sha384/sha512 (sha384 by default) and appears in the token as
`runtime_data_claims`. Init data is a digest, or the init-data TOML whose digest uses the algorithm it
names; its `data` map appears as `init_data_claims`, with `cdh.toml`/`aa.toml` turned into JSON and a
Kata agent `policy.rego` replaced by the `policy_data` it declares (`agent_policy_claims`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from protocols.initdata import InitDataError, parse_initdata_toml
from verifier.jsonutil import JsonError, strict_loads

HASH_ALGORITHMS = ("sha256", "sha384", "sha512")
DEFAULT_HASH_ALGORITHM = "sha384"
_POLICY_DATA_MARK = "policy_data := {"


class BindingError(ValueError):
    """Runtime data or init data supplied with the evidence is malformed."""


@dataclass(frozen=True, slots=True)
class RawRuntimeData:
    data: bytes


@dataclass(frozen=True, slots=True)
class StructuredRuntimeData:
    value: Any  # JSON


@dataclass(frozen=True, slots=True)
class InitDataDigest:
    digest: bytes


@dataclass(frozen=True, slots=True)
class InitDataToml:
    toml: str


RuntimeData = RawRuntimeData | StructuredRuntimeData
InitDataInput = InitDataDigest | InitDataToml


def hash_algorithm(name: str | None) -> str:
    """Upstream's `runtime_data_hash_algorithm`: empty or absent means sha384."""
    if not name:
        return DEFAULT_HASH_ALGORITHM
    if name.lower() not in HASH_ALGORITHMS:
        raise BindingError(f"hash algorithm {name[:20]!r} is not one of {', '.join(HASH_ALGORITHMS)}")
    return name.lower()


def canonical_json(value: Any) -> bytes:
    """RFC 8785 (JCS) serialization, as upstream's serde_json_canonicalizer."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, TypeError, ValueError, RecursionError) as exc:
        raise BindingError(f"structured runtime data cannot be canonicalized: {exc}") from None


def expected_report_data(
    runtime_data: RuntimeData, algorithm: str = DEFAULT_HASH_ALGORITHM
) -> tuple[bytes, Any]:
    """(expected report data, runtime_data_claims) for the given runtime data."""
    if isinstance(runtime_data, RawRuntimeData):
        return runtime_data.data, None
    digest = hashlib.new(hash_algorithm(algorithm), canonical_json(runtime_data.value)).digest()
    return digest, runtime_data.value


def expected_init_data(init_data: InitDataInput | None) -> tuple[bytes | None, Any]:
    """(expected init data digest, init_data_claims)."""
    if init_data is None:
        return None, None
    if isinstance(init_data, InitDataDigest):
        return init_data.digest, None
    try:
        parsed = parse_initdata_toml(init_data.toml.encode("utf-8"))
    except InitDataError as exc:
        raise BindingError(str(exc)) from None
    return bytes.fromhex(parsed.digest), init_data_claims(parsed.data)


def init_data_claims(data: Mapping[str, str]) -> dict[str, Any]:
    """The init data `data` map as the token shows it (see the module doc)."""
    claims: dict[str, Any] = dict(data)
    for name in ("cdh.toml", "aa.toml"):
        text = claims.get(name)
        if isinstance(text, str):
            with contextlib.suppress(tomllib.TOMLDecodeError):  # else left as text, as upstream
                claims[name] = _jsonable(tomllib.loads(text))
    rego = claims.get("policy.rego")
    if isinstance(rego, str):
        policy_data = _agent_policy_data(rego)
        if policy_data is not None:
            del claims["policy.rego"]
            claims["agent_policy_claims"] = policy_data
    return claims


def _agent_policy_data(rego: str) -> Any | None:
    """The JSON after `policy_data := ` when it runs to the end of the policy (the genpolicy layout)."""
    start = rego.find(_POLICY_DATA_MARK)
    if start < 0:
        return None
    try:
        return strict_loads(rego[start + len(_POLICY_DATA_MARK) - 1 :])
    except JsonError:
        return None


def _jsonable(value: Any) -> Any:
    """TOML values as JSON values: dates and times become ISO 8601 text, inf and nan their TOML text."""
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value
