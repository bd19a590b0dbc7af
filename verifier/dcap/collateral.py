"""Intel collateral documents: TCB info (v3) and QE identity (v2) of TDX or SGX, as PCS serves them.

A document is `{"tcbInfo": {...}, "signature": "<hex r||s>"}` (or `enclaveIdentity`); Intel signs
the exact bytes of the inner object's JSON text, so those bytes are cut out of the document as
received, never re-serialized. Any defect is a `collateral_invalid` error: collateral is input
from a service, not evidence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from verifier.errors import VerificationError

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
T = TypeVar("T")


class CollateralError(VerificationError):
    def __init__(self, message: str) -> None:
        super().__init__("collateral_invalid", message)


@dataclass(frozen=True, slots=True)
class DcapTee:
    """What differs between TDX and SGX collateral: PCS paths, document ids, PCS Client Tool keys."""

    name: str  # "tdx" or "sgx": the PCS path prefix of TCB info and QE identity
    tcb_info_id: str
    qe_identity_id: str
    tool_qe_identity: str  # key of the QE identity in PCS Client Tool output

    @property
    def is_tdx(self) -> bool:
        return self.name == "tdx"


TDX = DcapTee("tdx", "TDX", "TD_QE", "tdqeidentity")
SGX = DcapTee("sgx", "SGX", "QE", "qeidentity")


@dataclass(frozen=True, slots=True)
class TcbLevel:
    sgx_svns: tuple[int, ...]
    pce_svn: int
    tdx_svns: tuple[int, ...]
    date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IsvLevel:
    """A TCB level keyed by one ISV SVN (TDX module identities, QE identity)."""

    isvsvn: int
    date: datetime
    status: str
    advisory_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TdxModule:
    id: str
    mrsigner: bytes
    attributes: bytes
    attributes_mask: bytes
    levels: tuple[IsvLevel, ...]


@dataclass(frozen=True, slots=True)
class TcbInfo:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    fmspc: bytes
    pce_id: bytes
    tcb_type: int
    evaluation_data_number: int
    tdx_module: TdxModule | None  # TDX only
    module_identities: tuple[TdxModule, ...]
    levels: tuple[TcbLevel, ...]  # highest first, as Intel's verifier orders them


@dataclass(frozen=True, slots=True)
class QeIdentity:
    id: str
    version: int
    issue_date: datetime
    next_update: datetime
    evaluation_data_number: int
    miscselect: bytes
    miscselect_mask: bytes
    attributes: bytes
    attributes_mask: bytes
    mrsigner: bytes
    isvprodid: int
    levels: tuple[IsvLevel, ...]  # highest isvsvn first


@dataclass(frozen=True, slots=True)
class SignedDocument:
    """An inner collateral object with the exact bytes Intel signed and the raw r||s signature."""

    signed_bytes: bytes
    signature: bytes


def split_document(document: bytes, inner_key: str) -> tuple[Any, SignedDocument]:
    """Parse `{"<inner_key>": {...}, "signature": "<hex>"}` keeping the inner object's exact bytes."""
    try:
        members = _top_level_members(document.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError included
        raise CollateralError(f"{inner_key} document is not a JSON object: {exc}") from None
    if inner_key not in members or "signature" not in members:
        raise CollateralError(f"document lacks {inner_key!r} or 'signature'")
    value, raw = members[inner_key]
    signature = _hex(members["signature"][0], 64, "signature")
    return value, SignedDocument(raw.encode("utf-8"), signature)


def _top_level_members(text: str) -> dict[str, tuple[Any, str]]:
    """Members of the top-level JSON object: key -> (parsed value, exact source text)."""
    pos = _WS.match(text, 0).end()  # type: ignore[union-attr]
    if text[pos : pos + 1] != "{":
        raise ValueError("expected '{'")
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    members: dict[str, tuple[Any, str]] = {}
    if text[pos : pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos : pos + 1] != '"':
                raise ValueError(f"expected a key at {pos}")
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos : pos + 1] != ":":
                raise ValueError(f"expected ':' at {pos}")
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
            value, end = _DECODER.raw_decode(text, pos)
            if key in members:
                raise ValueError(f"duplicate key {key!r}")
            members[key] = (value, text[pos:end])
            pos = _WS.match(text, end).end()  # type: ignore[union-attr]
            sep = text[pos : pos + 1]
            pos += 1
            if sep == "}":
                break
            if sep != ",":
                raise ValueError(f"expected ',' or '}}' at {pos - 1}")
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if _WS.match(text, pos).end() != len(text):  # type: ignore[union-attr]
        raise ValueError("data after the JSON object")
    return members


def _object(obj: Any, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise CollateralError(f"{what} is not an object")
    return obj


def _field(obj: Any, key: str, kind: type[T], what: str) -> T:
    if not isinstance(obj, dict) or key not in obj:
        raise CollateralError(f"{what} lacks {key!r}")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise CollateralError(f"{what}.{key} is not a {kind.__name__}")
    return value


def _hex(value: Any, size: int | None, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value) if isinstance(value, str) else None
    except ValueError:
        raw = None
    if raw is None or (size is not None and len(raw) != size):
        raise CollateralError(f"{what} is not {size if size is not None else 'some'} bytes of hex")
    return raw


def _date(obj: Any, key: str, what: str) -> datetime:
    text = _field(obj, key, str, what)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CollateralError(f"{what}.{key} is not an ISO 8601 date") from None
    if value.tzinfo is None:
        raise CollateralError(f"{what}.{key} has no time zone")
    return value


def _list(obj: Any, key: str, what: str, item: Callable[[Any, str], T]) -> tuple[T, ...]:
    values = _field(obj, key, list, what)
    return tuple(item(v, f"{what}.{key}[{i}]") for i, v in enumerate(values))


def _advisories(obj: Any, what: str) -> tuple[str, ...]:
    if "advisoryIDs" not in obj:
        return ()
    ids = _field(obj, "advisoryIDs", list, what)
    if not all(isinstance(i, str) for i in ids):
        raise CollateralError(f"{what}.advisoryIDs holds a non-string")
    return tuple(ids)


def _svn(obj: Any, what: str) -> int:
    value = _field(obj, "svn", int, what)
    if not 0 <= value <= 255:
        raise CollateralError(f"{what}.svn is out of range")
    return value


def _components(obj: Any, key: str, what: str) -> tuple[int, ...]:
    svns = _list(obj, key, what, _svn)
    if len(svns) != 16:
        raise CollateralError(f"{what}.{key} must list 16 components")
    return svns


def _tcb_level(obj: Any, what: str, tdx: bool) -> TcbLevel:
    obj = _object(obj, what)
    tcb = _field(obj, "tcb", dict, what)
    return TcbLevel(
        sgx_svns=_components(tcb, "sgxtcbcomponents", what + ".tcb"),
        pce_svn=_field(tcb, "pcesvn", int, what + ".tcb"),
        tdx_svns=_components(tcb, "tdxtcbcomponents", what + ".tcb") if tdx else (),
        date=_date(obj, "tcbDate", what),
        status=_field(obj, "tcbStatus", str, what),
        advisory_ids=_advisories(obj, what),
    )


def _isv_level(obj: Any, what: str) -> IsvLevel:
    obj = _object(obj, what)
    tcb = _field(obj, "tcb", dict, what)
    return IsvLevel(
        isvsvn=_field(tcb, "isvsvn", int, what + ".tcb"),
        date=_date(obj, "tcbDate", what),
        status=_field(obj, "tcbStatus", str, what),
        advisory_ids=_advisories(obj, what),
    )


def _module(obj: Any, what: str) -> TdxModule:
    obj = _object(obj, what)
    levels = _list(obj, "tcbLevels", what, _isv_level) if "tcbLevels" in obj else ()
    return TdxModule(
        id=_field(obj, "id", str, what) if "id" in obj else "",
        mrsigner=_hex(_field(obj, "mrsigner", str, what), 48, what + ".mrsigner"),
        attributes=_hex(_field(obj, "attributes", str, what), 8, what + ".attributes"),
        attributes_mask=_hex(_field(obj, "attributesMask", str, what), 8, what + ".attributesMask"),
        levels=tuple(sorted(levels, key=lambda level: level.isvsvn, reverse=True)),
    )


def parse_tcb_info(obj: Any, tee: DcapTee = TDX) -> TcbInfo:
    """A TCB info object (the value of `tcbInfo`), version 3, of `tee`; SGX's has no TDX parts."""
    what = "tcbInfo"
    obj = _object(obj, what)
    version = _field(obj, "version", int, what)
    ident = _field(obj, "id", str, what)
    if version != 3 or ident != tee.tcb_info_id:
        raise CollateralError(f"TCB info {ident!r} version {version} is not {tee.tcb_info_id} TCB info v3")
    levels = _list(obj, "tcbLevels", what, lambda level, at: _tcb_level(level, at, tee.is_tdx))
    has_modules = tee.is_tdx and "tdxModuleIdentities" in obj
    modules = _list(obj, "tdxModuleIdentities", what, _module) if has_modules else ()
    module = _module(_field(obj, "tdxModule", dict, what), what + ".tdxModule") if tee.is_tdx else None
    return TcbInfo(
        id=ident,
        version=version,
        issue_date=_date(obj, "issueDate", what),
        next_update=_date(obj, "nextUpdate", what),
        fmspc=_hex(_field(obj, "fmspc", str, what), 6, "tcbInfo.fmspc"),
        pce_id=_hex(_field(obj, "pceId", str, what), 2, "tcbInfo.pceId"),
        tcb_type=_field(obj, "tcbType", int, what),
        evaluation_data_number=_field(obj, "tcbEvaluationDataNumber", int, what),
        tdx_module=module,
        module_identities=modules,
        levels=tuple(sorted(levels, key=lambda lv: (lv.sgx_svns, lv.pce_svn, lv.tdx_svns), reverse=True)),
    )


def parse_qe_identity(obj: Any, tee: DcapTee = TDX) -> QeIdentity:
    """A QE identity object (the value of `enclaveIdentity`), version 2: TD_QE for TDX, QE for SGX."""
    what = "enclaveIdentity"
    obj = _object(obj, what)
    version = _field(obj, "version", int, what)
    ident = _field(obj, "id", str, what)
    if version != 2 or ident != tee.qe_identity_id:
        raise CollateralError(
            f"QE identity {ident!r} version {version} is not a {tee.qe_identity_id} identity v2"
        )
    levels = _list(obj, "tcbLevels", what, _isv_level)
    return QeIdentity(
        id=ident,
        version=version,
        issue_date=_date(obj, "issueDate", what),
        next_update=_date(obj, "nextUpdate", what),
        evaluation_data_number=_field(obj, "tcbEvaluationDataNumber", int, what),
        miscselect=_hex(_field(obj, "miscselect", str, what), 4, what + ".miscselect"),
        miscselect_mask=_hex(_field(obj, "miscselectMask", str, what), 4, what + ".miscselectMask"),
        attributes=_hex(_field(obj, "attributes", str, what), 16, what + ".attributes"),
        attributes_mask=_hex(_field(obj, "attributesMask", str, what), 16, what + ".attributesMask"),
        mrsigner=_hex(_field(obj, "mrsigner", str, what), 32, what + ".mrsigner"),
        isvprodid=_field(obj, "isvprodid", int, what),
        levels=tuple(sorted(levels, key=lambda level: level.isvsvn, reverse=True)),
    )
