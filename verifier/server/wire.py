"""Request decoding for the REST and gRPC APIs (pure functions; errors are `RequestError`).

Field names and encodings are upstream's (`restful-as`, `grpc-as`): evidence, raw runtime data and
init-data digests are base64url without padding (padding is tolerated); REST `runtime_data` is
`{"raw": ...}` or `{"structured": <JSON>}`, `init_data` is `{"init_data_digest": ...}` or
`{"init_data_toml": ...}`; gRPC carries structured runtime data as JSON text.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from protocols.proto import attestation_pb2
from verifier.binding import (
    BindingError,
    InitDataDigest,
    InitDataInput,
    InitDataToml,
    RawRuntimeData,
    RuntimeData,
    StructuredRuntimeData,
    hash_algorithm,
)
from verifier.jsonutil import JsonError, strict_loads
from verifier.service import RequestError, VerificationRequest

MAX_BODY_BYTES = 2 * 1024 * 1024  # upstream KBS's default payload limit


def b64url(text: Any, what: str) -> bytes:
    """Decode URL-safe base64 (upstream: URL_SAFE_NO_PAD); padding is accepted too."""
    if not isinstance(text, str):
        raise RequestError(f"{what} must be a base64url string")
    try:
        data = text.encode("ascii")
        return base64.b64decode(data + b"=" * (-len(data) % 4), altchars=b"-_", validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise RequestError(f"{what} is not base64url") from None


def _json_document(body: bytes | str, what: str) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(f"{what} is larger than {MAX_BODY_BYTES} bytes")
    try:
        return strict_loads(body)
    except JsonError as exc:
        raise RequestError(f"{what}: {exc}") from None


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestError(f"{what} must be a JSON object")
    return value


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise RequestError(f"{what} must be a string")
    return value


def _algorithm(name: Any) -> str:
    if name is not None and not isinstance(name, str):
        raise RequestError("runtime_data_hash_algorithm must be a string")
    try:
        return hash_algorithm(name)
    except BindingError as exc:
        raise RequestError(str(exc)) from None


def _one_of(value: Any, what: str, names: tuple[str, str]) -> tuple[str, Any]:
    """Serde's externally tagged enum: an object with exactly one of `names`."""
    obj = _object(value, what)
    if len(obj) != 1 or next(iter(obj)) not in names:
        raise RequestError(f"{what} must be an object with exactly one of {' or '.join(names)}")
    return next(iter(obj.items()))


def _rest_runtime_data(value: Any) -> RuntimeData | None:
    if value is None:
        return None
    kind, content = _one_of(value, "runtime_data", ("raw", "structured"))
    if kind == "raw":
        return RawRuntimeData(b64url(content, "runtime_data.raw"))
    return StructuredRuntimeData(content)


def _rest_init_data(value: Any) -> InitDataInput | None:
    if value is None:
        return None
    kind, content = _one_of(value, "init_data", ("init_data_digest", "init_data_toml"))
    if kind == "init_data_digest":
        return InitDataDigest(b64url(content, "init_data.init_data_digest"))
    return InitDataToml(_string(content, "init_data.init_data_toml"))


def _policy_ids(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise RequestError("policy_ids must be a list of strings")
    return value


def rest_attestation(body: bytes | str) -> tuple[list[VerificationRequest], list[str]]:
    """`POST /attestation` body -> verification requests and policy ids."""
    doc = _object(_json_document(body, "attestation request"), "attestation request")
    items = doc.get("verification_requests")
    if not isinstance(items, list):
        raise RequestError("verification_requests must be a list")
    requests = []
    for index, item in enumerate(items):
        entry = _object(item, f"verification_requests[{index}]")
        requests.append(
            VerificationRequest(
                tee=_string(entry.get("tee"), "tee"),
                evidence=b64url(entry.get("evidence"), "evidence"),
                runtime_data=_rest_runtime_data(entry.get("runtime_data")),
                init_data=_rest_init_data(entry.get("init_data")),
                runtime_data_hash_algorithm=_algorithm(entry.get("runtime_data_hash_algorithm")),
            )
        )
    return requests, _policy_ids(doc.get("policy_ids"))


def rest_set_policy(body: bytes | str) -> tuple[str, str]:
    """`POST /policy` body `{"policy_id", "policy": base64url Rego}` -> (id, Rego text)."""
    doc = _object(_json_document(body, "set-policy request"), "set-policy request")
    return _string(doc.get("policy_id"), "policy_id"), policy_text(doc.get("policy"))


def policy_text(encoded: Any) -> str:
    try:
        return b64url(encoded, "policy").decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("policy is not UTF-8 text") from None


def rest_challenge(body: bytes | str) -> tuple[str, str]:
    """`POST /challenge` body `{"tee", "tee_params"}`."""
    doc = _object(_json_document(body, "challenge request"), "challenge request")
    return _string(doc.get("tee"), "tee"), _string(doc.get("tee_params"), "tee_params")


def grpc_attestation(
    request: attestation_pb2.AttestationRequest,
) -> tuple[list[VerificationRequest], list[str]]:
    """`AttestationEvaluate` request -> verification requests and policy ids."""
    requests = []
    for item in request.verification_requests:
        runtime: RuntimeData | None = None
        match item.WhichOneof("runtime_data"):
            case "raw_runtime_data":
                runtime = RawRuntimeData(b64url(item.raw_runtime_data, "raw_runtime_data"))
            case "structured_runtime_data":
                structured = _json_document(item.structured_runtime_data, "structured_runtime_data")
                runtime = StructuredRuntimeData(structured)
        init: InitDataInput | None = None
        match item.WhichOneof("init_data"):
            case "init_data_digest":
                init = InitDataDigest(b64url(item.init_data_digest, "init_data_digest"))
            case "init_data_toml":
                init = InitDataToml(item.init_data_toml)
        requests.append(
            VerificationRequest(
                tee=item.tee,
                evidence=b64url(item.evidence, "evidence"),
                runtime_data=runtime,
                init_data=init,
                runtime_data_hash_algorithm=_algorithm(item.runtime_data_hash_algorithm),
            )
        )
    return requests, list(request.policy_ids)
