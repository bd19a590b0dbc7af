"""Fabricates SGX DCAP quote v3 evidence for tests and the benchmark, on `tdx_builder`'s test PKI
(root, PCK Platform/Processor CA, PCK leaf with the SGX extension, TCB signing certificate): enclave
reports, quotes, and SGX TCB info / QE identity collateral signed by the test signing key.

Laid out as Intel's formats say, independently of the verifier's parsers, so a round trip through
the verifier checks both sides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from tests.verifier import tdx_builder as tb
from tests.verifier.tdx_builder import NOW, Pki
from verifier.dcap.store import RawCollateral

QE_MRSIGNER = bytes.fromhex("8c4f5775d796503e96137f77c68a829a0056ac8ded70140b081b094490c57bff")
QE_PROD_ID = 1
FLAG_INIT, FLAG_DEBUG, FLAG_MODE64 = 0x01, 0x02, 0x04
XFRM = 0xE7
SIGNED_SIZE = 432  # header + ISV enclave report: what the attestation key signs


def enclave_report(
    *,
    attributes: int = FLAG_INIT | FLAG_MODE64,
    mr_enclave: bytes = bytes(32),
    mr_signer: bytes = bytes(32),
    config_id: bytes = bytes(64),
    isv_prod_id: int = 0,
    isv_svn: int = 0,
    misc_select: int = 0,
    report_data: bytes = bytes(64),
) -> bytes:
    """A 384-byte SGX REPORT body (Intel SDM `REPORT`, minus key id and MAC)."""
    report = (
        bytes([6, 6, 12, 12, 255, 255] + [0] * 10)  # cpu_svn
        + struct.pack("<I", misc_select)
        + bytes(12)  # reserved1
        + bytes(16)  # isv_ext_prod_id
        + struct.pack("<QQ", attributes, XFRM)
        + mr_enclave
        + bytes(32)  # reserved2
        + mr_signer
        + bytes(32)  # reserved3
        + config_id
        + struct.pack("<HHH", isv_prod_id, isv_svn, 0)  # isv_prod_id, isv_svn, config_svn
        + bytes(42)  # reserved4
        + bytes(16)  # isv_family_id
        + report_data
    )
    assert len(report) == 384
    return report


@dataclass
class SgxSpec:
    report_data: bytes = b"test".ljust(64, b"\x00")
    config_id: bytes = bytes(64)
    attributes: int = FLAG_INIT | FLAG_MODE64
    mr_enclave: bytes = bytes(range(32))
    mr_signer: bytes = bytes(range(32, 64))
    qe_isv_svn: int = 8
    qe_mrsigner: bytes = QE_MRSIGNER
    qe_report_data: bytes | None = None  # default: SHA-256(attestation key || auth data) || 0^32
    auth_data: bytes = bytes(range(32))
    attestation_key: ec.EllipticCurvePrivateKey = field(default_factory=tb.new_key)
    include_root: bool = True
    version: int = 3
    tee_type: int = 0


def make_quote(pki: Pki, spec: SgxSpec | None = None) -> bytes:
    spec = spec or SgxSpec()
    header = struct.pack("<HHIHH", spec.version, 2, spec.tee_type, 8, 13) + tb.QE_VENDOR_ID + bytes(20)
    body = enclave_report(
        attributes=spec.attributes,
        mr_enclave=spec.mr_enclave,
        mr_signer=spec.mr_signer,
        config_id=spec.config_id,
        report_data=spec.report_data,
    )
    signed = header + body
    binding = spec.qe_report_data
    if binding is None:
        binding = hashlib.sha256(tb.raw_public(spec.attestation_key) + spec.auth_data).digest() + bytes(32)
    qe = enclave_report(
        attributes=0x15,
        mr_enclave=bytes([0x5A] * 32),
        mr_signer=spec.qe_mrsigner,
        isv_prod_id=QE_PROD_ID,
        isv_svn=spec.qe_isv_svn,
        report_data=binding,
    )
    chain = tb.pem(pki.pck, pki.ca, *([pki.root] if spec.include_root else []))
    sig_data = (
        tb.sign_raw(spec.attestation_key, signed)
        + tb.raw_public(spec.attestation_key)
        + qe
        + tb.sign_raw(pki.pck_key, qe)
        + struct.pack("<H", len(spec.auth_data))
        + spec.auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    return signed + struct.pack("<I", len(sig_data)) + sig_data


def evidence(quote: bytes) -> bytes:
    return json.dumps({"quote": base64.b64encode(quote).decode()}).encode()


# --- collateral ----------------------------------------------------------------------------------


def tcb_level(
    status: str,
    *,
    sgx_svns: Sequence[int] = tb.SGX_SVNS,
    pce_svn: int = 13,
    date: str = "2024-03-13T00:00:00Z",
    advisories: Sequence[str] = (),
) -> dict[str, Any]:
    level: dict[str, Any] = {
        "tcb": {"sgxtcbcomponents": [{"svn": svn} for svn in sgx_svns], "pcesvn": pce_svn},
        "tcbDate": date,
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


DEFAULT_LEVELS = (
    tcb_level("UpToDate"),
    tcb_level(
        "OutOfDate",
        sgx_svns=(0,) * 16,
        pce_svn=5,
        date="2018-01-04T00:00:00Z",
        advisories=("INTEL-SA-00334",),
    ),
)


def tcb_info(
    pki: Pki,
    *,
    levels: Sequence[dict[str, Any]] = DEFAULT_LEVELS,
    fmspc: bytes = tb.FMSPC,
    next_update: datetime = NOW + timedelta(days=29),
    ident: str = "SGX",
) -> bytes:
    inner = {
        "id": ident,
        "version": 3,
        "issueDate": (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nextUpdate": next_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "fmspc": fmspc.hex().upper(),
        "pceId": tb.PCE_ID.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tcbLevels": list(levels),
    }
    return tb.signed_document("tcbInfo", inner, pki.signing_key)


def qe_identity(
    pki: Pki,
    *,
    levels: Sequence[tuple[int, str]] = ((8, "UpToDate"), (6, "OutOfDate")),
    next_update: datetime = NOW + timedelta(days=29),
) -> bytes:
    inner = {
        "id": "QE",
        "version": 2,
        "issueDate": (NOW - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "nextUpdate": next_update.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": QE_MRSIGNER.hex().upper(),
        "isvprodid": QE_PROD_ID,
        "tcbLevels": [
            {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}
            for svn, status in levels
        ],
    }
    return tb.signed_document("enclaveIdentity", inner, pki.signing_key)


def collateral(
    pki: Pki, *, tcb_doc: bytes | None = None, qe_doc: bytes | None = None, **options: Any
) -> RawCollateral:
    """SGX collateral with issuer chains and CRLs (options as `tdx_builder.collateral`)."""
    return tb.collateral(
        pki,
        tcb_doc=tcb_doc if tcb_doc is not None else tcb_info(pki),
        qe_doc=qe_doc if qe_doc is not None else qe_identity(pki),
        **options,
    )


def made_up_collateral(*, fmspc: bytes, sgx_svns: Sequence[int], pce_svn: int) -> RawCollateral:
    """Unsigned collateral (no issuer chains) for a real platform whose own is not at hand: one
    UpToDate level at the given TCB and Intel's QE identity. Only for benchmarks and tests that
    accept unverified collateral on purpose."""
    svns = (*sgx_svns, *(0,) * (16 - len(sgx_svns)))
    pki = tb.make_pki()
    levels = (tcb_level("UpToDate", sgx_svns=svns, pce_svn=pce_svn),)
    return RawCollateral(tcb_info=tcb_info(pki, levels=levels, fmspc=fmspc), qe_identity=qe_identity(pki))
