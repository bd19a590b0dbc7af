"""The key-provider protocol's JSON (Go ocicrypt `keywrap/keyprovider`): what skopeo sends to a key
provider (`cmd` stdin, or the bytes field of the gRPC/ttRPC message) and what it expects back.

`Parameters` maps a provider name to a list of byte strings: the text after `provider:<name>:` of
`--encryption-key` / `--decryption-key`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocols.ocicrypt import jsonbytes
from protocols.ocicrypt.errors import MessageFormatError

OP_WRAP = "keywrap"
OP_UNWRAP = "keyunwrap"
ANNOTATION_PREFIX = "org.opencontainers.image.enc.keys.provider."
PUBOPTS_ANNOTATION = "org.opencontainers.image.enc.pubopts"
ENCRYPTED_SUFFIX = "+encrypted"


@dataclass(frozen=True, slots=True)
class WrapRequest:
    optsdata: bytes
    parameters: dict[str, list[bytes]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class UnwrapRequest:
    annotation: bytes
    parameters: dict[str, list[bytes]] = field(default_factory=dict)


def parse_request(raw: bytes | str) -> WrapRequest | UnwrapRequest:
    doc = jsonbytes.load_object(raw, "key provider input")
    op = doc.get("op")
    if op == OP_WRAP:
        params = jsonbytes.optional_object(doc, "keywrapparams", "keywrapparams")
        optsdata = jsonbytes.decode_optional(params, "optsdata", "keywrapparams.optsdata")
        if optsdata is None:
            raise MessageFormatError("keywrap request has no optsdata")
        ec = jsonbytes.optional_object(params, "ec", "keywrapparams.ec")
        return WrapRequest(optsdata, _parameters(ec, "keywrapparams.ec.Parameters"))
    if op == OP_UNWRAP:
        params = jsonbytes.optional_object(doc, "keyunwrapparams", "keyunwrapparams")
        annotation = jsonbytes.decode_optional(params, "annotation", "keyunwrapparams.annotation")
        if annotation is None:
            raise MessageFormatError("keyunwrap request has no annotation")
        dc = jsonbytes.optional_object(params, "dc", "keyunwrapparams.dc")
        return UnwrapRequest(annotation, _parameters(dc, "keyunwrapparams.dc.Parameters"))
    raise MessageFormatError(f"key provider op must be {OP_WRAP!r} or {OP_UNWRAP!r}, not {str(op)[:40]!r}")


def _parameters(config: dict[str, Any], what: str) -> dict[str, list[bytes]]:
    params = jsonbytes.optional_object(config, "Parameters", what)
    result: dict[str, list[bytes]] = {}
    for name, values in params.items():
        if values is None:
            continue
        if not isinstance(values, list):
            raise MessageFormatError(f"{what}[{name[:40]!r}] must be a list")
        result[name] = [jsonbytes.decode(value, f"{what}[{name[:40]!r}]") for value in values]
    return result


def wrap_request(optsdata: bytes, parameters: dict[str, list[bytes]]) -> bytes:
    """As Go ocicrypt marshals it (for clients and tests of a provider)."""
    ec = {"Parameters": _encode_parameters(parameters), "DecryptConfig": {"Parameters": {}}}
    return jsonbytes.dumps(
        {
            "op": OP_WRAP,
            "keywrapparams": {"ec": ec, "optsdata": jsonbytes.encode(optsdata)},
            "keyunwrapparams": {"dc": None, "annotation": None},
        }
    )


def unwrap_request(annotation: bytes, parameters: dict[str, list[bytes]]) -> bytes:
    return jsonbytes.dumps(
        {
            "op": OP_UNWRAP,
            "keywrapparams": {"ec": None, "optsdata": None},
            "keyunwrapparams": {
                "dc": {"Parameters": _encode_parameters(parameters)},
                "annotation": jsonbytes.encode(annotation),
            },
        }
    )


def _encode_parameters(parameters: dict[str, list[bytes]]) -> dict[str, list[str]]:
    return {name: [jsonbytes.encode(v) for v in values] for name, values in parameters.items()}


def wrap_response(annotation: bytes) -> bytes:
    """Result bytes as an array of integers: ocicrypt-rs reads them as `Vec<u8>` (serde's default) and
    Go's decoder accepts the array as well, so this form suits both clients."""
    return jsonbytes.dumps({"keywrapresults": {"annotation": list(annotation)}})


def unwrap_response(optsdata: bytes) -> bytes:
    return jsonbytes.dumps({"keyunwrapresults": {"optsdata": list(optsdata)}})


def parse_wrap_response(raw: bytes | str) -> bytes:
    results = jsonbytes.optional_object(
        jsonbytes.load_object(raw, "key provider output"), "keywrapresults", "keywrapresults"
    )
    annotation = jsonbytes.decode_optional(results, "annotation", "keywrapresults.annotation")
    if annotation is None:
        raise MessageFormatError("key provider output has no keywrapresults.annotation")
    return annotation


def parse_unwrap_response(raw: bytes | str) -> bytes:
    doc = jsonbytes.load_object(raw, "key provider output")
    results = jsonbytes.optional_object(doc, "keyunwrapresults", "keyunwrapresults")
    optsdata = jsonbytes.decode_optional(results, "optsdata", "keyunwrapresults.optsdata")
    if optsdata is None:
        raise MessageFormatError("key provider output has no keyunwrapresults.optsdata")
    return optsdata
