"""Fabricates TDX-shaped evidence for tests and the benchmark: a test root CA, a PCK chain with
the Intel SGX extension, a quoting enclave report, an attestation key, quotes v4/v5 (TDX 1.0 and
1.5 bodies), signed TCB info / QE identity collateral with CRLs, and CC event logs.

Everything is laid out as Intel's formats say, independently of the verifier's own parsers, so a
test that round-trips through the verifier checks both sides.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from verifier.dcap.store import RawCollateral

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SGX_OID = "1.2.840.113741.1.13.1"
FMSPC = bytes.fromhex("00a06d080000")
PCE_ID = b"\x00\x00"
QE_MRSIGNER = bytes.fromhex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")
QE_ATTRIBUTES = bytes.fromhex("1500000000000000e700000000000000")
SGX_SVNS = (2, 2, 2, 2, 4, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0)
TEE_TCB_SVN = bytes([5, 3, 2] + [0] * 13)  # module isvsvn 5, module version 3 (TDX_03)
EV_NO_ACTION = 3
EV_SEPARATOR = 4
EV_EFI_ACTION = 0x80000007


# --- DER encoding (for the SGX extension, which cryptography cannot build for us) ---------------


def _tlv(tag: int, content: bytes) -> bytes:
    size = len(content)
    if size < 0x80:
        return bytes([tag, size]) + content
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(raw)]) + raw + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out += bytes(reversed(chunk))
    return _tlv(0x06, bytes(out))


def _uint(tag: int, value: int) -> bytes:
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
    return _tlv(tag, raw)


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _member(arc: str, value: bytes) -> bytes:
    return _seq(_oid(f"{SGX_OID}.{arc}"), value)


def sgx_extension(
    *,
    fmspc: bytes = FMSPC,
    pce_id: bytes = PCE_ID,
    sgx_svns: Sequence[int] = SGX_SVNS,
    pce_svn: int = 13,
    sgx_type: int = 1,
    platform_instance_id: bytes | None = bytes(range(16)),
    ppid: bytes = bytes(range(100, 116)),
) -> bytes:
    tcb = [_member(f"2.{i + 1}", _uint(0x02, svn)) for i, svn in enumerate(sgx_svns)]
    tcb += [_member("2.17", _uint(0x02, pce_svn)), _member("2.18", _tlv(0x04, bytes(sgx_svns)))]
    members = [
        _member("1", _tlv(0x04, ppid)),
        _member("2", _seq(*tcb)),
        _member("3", _tlv(0x04, pce_id)),
        _member("4", _tlv(0x04, fmspc)),
        _member("5", _uint(0x0A, sgx_type)),
    ]
    if platform_instance_id is not None:
        members.append(_member("6", _tlv(0x04, platform_instance_id)))
        flags = [_member(f"7.{i}", _tlv(0x01, b"\xff")) for i in (1, 2, 3)]
        members.append(_member("7", _seq(*flags)))
    return _seq(*members)


# --- keys, certificates, signatures --------------------------------------------------------------


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def raw_public(key: ec.EllipticCurvePrivateKey) -> bytes:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return point[1:]


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Intel Corporation"),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        ]
    )


def make_cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool,
    not_before: datetime,
    not_after: datetime,
    extension: bytes | None = None,
    serial: int | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if extension is not None:
        builder = builder.add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_OID), extension), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@dataclass
class Pki:
    """A test Intel-shaped PKI: root, PCK CA and leaf, TCB signing cert."""

    root_key: ec.EllipticCurvePrivateKey
    root: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    ca: x509.Certificate
    pck_key: ec.EllipticCurvePrivateKey
    pck: x509.Certificate
    signing_key: ec.EllipticCurvePrivateKey
    signing: x509.Certificate


def make_pki(
    *,
    ca_type: str = "platform",
    pck_not_after: datetime = NOW + timedelta(days=365),
    extension: bytes | None = None,
    root_key: ec.EllipticCurvePrivateKey | None = None,
) -> Pki:
    valid_from = NOW - timedelta(days=365)
    root_key = root_key or new_key()
    root = make_cert(
        "Test SGX Root CA",
        root_key,
        None,
        root_key,
        ca=True,
        not_before=valid_from,
        not_after=NOW + timedelta(days=3650),
    )
    ca_key = new_key()
    ca_name = "Intel SGX PCK Platform CA" if ca_type == "platform" else "Intel SGX PCK Processor CA"
    ca = make_cert(
        ca_name, ca_key, root, root_key, ca=True, not_before=valid_from, not_after=NOW + timedelta(days=3650)
    )
    pck_key = new_key()
    pck = make_cert(
        "Intel SGX PCK Certificate",
        pck_key,
        ca,
        ca_key,
        ca=False,
        not_before=valid_from,
        not_after=pck_not_after,
        extension=extension if extension is not None else sgx_extension(),
    )
    signing_key = new_key()
    signing = make_cert(
        "Intel SGX TCB Signing",
        signing_key,
        root,
        root_key,
        ca=False,
        not_before=valid_from,
        not_after=NOW + timedelta(days=3650),
    )
    return Pki(root_key, root, ca_key, ca, pck_key, pck, signing_key, signing)


# --- quotes --------------------------------------------------------------------------------------


@dataclass
class QuoteSpec:
    version: int = 4
    body_type: int = 2  # v5 only: 2 = TDX 1.0, 3 = TDX 1.5
    report_data: bytes = bytes(64)
    mr_config_id: bytes = bytes(48)
    rtmrs: Sequence[bytes] = (bytes(48),) * 4
    td_attributes: int = 1 << 28  # septve_disable
    tee_tcb_svn: bytes = TEE_TCB_SVN
    tee_tcb_svn2: bytes = TEE_TCB_SVN
    mr_td: bytes = bytes(range(48))
    mrsigner_seam: bytes = bytes(48)
    qe_isv_svn: int = 4
    qe_mrsigner: bytes = QE_MRSIGNER
    qe_report_data: bytes | None = None  # default: SHA-256(attestation key || auth data)
    auth_data: bytes = bytes(range(32))
    attestation_key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    include_root: bool = True


def td_body(spec: QuoteSpec) -> bytes:
    body = (
        spec.tee_tcb_svn
        + bytes([0xAB] * 48)  # mr_seam
        + spec.mrsigner_seam
        + bytes(8)  # seam_attributes
        + spec.td_attributes.to_bytes(8, "little")
        + bytes.fromhex("e742060000000000")  # xfam
        + spec.mr_td
        + spec.mr_config_id
        + bytes([0x11] * 48)  # mr_owner
        + bytes([0x22] * 48)  # mr_owner_config
        + b"".join(spec.rtmrs)
        + spec.report_data
    )
    if spec.version == 5 and spec.body_type == 3:
        body += spec.tee_tcb_svn2 + bytes([0x33] * 48)  # tee_tcb_svn2, mr_servicetd
    return body


def qe_report(spec: QuoteSpec) -> bytes:
    binding = spec.qe_report_data
    if binding is None:
        binding = hashlib.sha256(raw_public(spec.attestation_key) + spec.auth_data).digest() + bytes(32)
    report = (
        bytes(16)  # cpu_svn
        + bytes(4)  # misc_select
        + bytes(28)
        + QE_ATTRIBUTES
        + bytes([0x5A] * 32)  # mr_enclave
        + bytes(32)
        + spec.qe_mrsigner
        + bytes(96)
        + struct.pack("<HH", 2, spec.qe_isv_svn)
        + bytes(60)
        + binding
    )
    assert len(report) == 384
    return report


def make_quote(pki: Pki, spec: QuoteSpec | None = None) -> bytes:
    spec = spec or QuoteSpec()
    body = td_body(spec)
    header = struct.pack("<HHI", spec.version, 2, 0x81) + bytes(4) + QE_VENDOR_ID + bytes(20)
    if spec.version == 5:
        header += struct.pack("<HI", spec.body_type, len(body))
    signed = header + body
    chain = pem(pki.pck, pki.ca, *([pki.root] if spec.include_root else [])) + b"\x00"
    report = qe_report(spec)
    qe_cert = (
        report
        + sign_raw(pki.pck_key, report)
        + struct.pack("<H", len(spec.auth_data))
        + spec.auth_data
        + struct.pack("<HI", 5, len(chain))
        + chain
    )
    sig_data = (
        sign_raw(spec.attestation_key, signed)
        + raw_public(spec.attestation_key)
        + struct.pack("<HI", 6, len(qe_cert))
        + qe_cert
    )
    return signed + struct.pack("<I", len(sig_data)) + sig_data


def evidence(quote: bytes, ccel: bytes | None = None) -> bytes:
    return json.dumps(
        {
            "cc_eventlog": base64.b64encode(ccel).decode() if ccel is not None else None,
            "quote": base64.b64encode(quote).decode(),
        }
    ).encode()


# --- collateral ----------------------------------------------------------------------------------


def _components(svns: Sequence[int]) -> list[dict[str, Any]]:
    return [{"svn": svn} for svn in svns]


def tcb_level(
    status: str,
    *,
    sgx_svns: Sequence[int] = SGX_SVNS,
    pce_svn: int = 13,
    tdx_svns: Sequence[int] = (5, 0, 2) + (0,) * 13,
    date: str = "2024-03-13T00:00:00Z",
    advisories: Sequence[str] = (),
) -> dict[str, Any]:
    level: dict[str, Any] = {
        "tcb": {
            "sgxtcbcomponents": _components(sgx_svns),
            "pcesvn": pce_svn,
            "tdxtcbcomponents": _components(tdx_svns),
        },
        "tcbDate": date,
        "tcbStatus": status,
    }
    if advisories:
        level["advisoryIDs"] = list(advisories)
    return level


DEFAULT_LEVELS = (
    tcb_level("UpToDate", advisories=("INTEL-SA-00837",)),
    tcb_level("OutOfDate", pce_svn=5, tdx_svns=(0,) * 16, date="2018-01-04T00:00:00Z"),
)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def signed_document(inner_key: str, inner: dict[str, Any], key: ec.EllipticCurvePrivateKey) -> bytes:
    text = json.dumps(inner, separators=(",", ":"))
    signature = sign_raw(key, text.encode()).hex()
    return f'{{"{inner_key}":{text},"signature":"{signature}"}}'.encode()


def tcb_info(
    pki: Pki,
    *,
    levels: Sequence[dict[str, Any]] = DEFAULT_LEVELS,
    fmspc: bytes = FMSPC,
    issue: datetime = NOW - timedelta(days=1),
    next_update: datetime = NOW + timedelta(days=29),
    module_levels: Sequence[tuple[int, str]] = ((3, "UpToDate"),),
) -> bytes:
    inner = {
        "id": "TDX",
        "version": 3,
        "issueDate": _stamp(issue),
        "nextUpdate": _stamp(next_update),
        "fmspc": fmspc.hex().upper(),
        "pceId": PCE_ID.hex(),
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tdxModule": {"mrsigner": "00" * 48, "attributes": "00" * 8, "attributesMask": "FF" * 8},
        "tdxModuleIdentities": [
            {
                "id": "TDX_03",
                "mrsigner": "00" * 48,
                "attributes": "00" * 8,
                "attributesMask": "FF" * 8,
                "tcbLevels": [
                    {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}
                    for svn, status in module_levels
                ],
            }
        ],
        "tcbLevels": list(levels),
    }
    return signed_document("tcbInfo", inner, pki.signing_key)


def qe_identity(
    pki: Pki,
    *,
    issue: datetime = NOW - timedelta(days=1),
    next_update: datetime = NOW + timedelta(days=29),
    levels: Sequence[tuple[int, str]] = ((4, "UpToDate"), (2, "OutOfDate")),
) -> bytes:
    inner = {
        "id": "TD_QE",
        "version": 2,
        "issueDate": _stamp(issue),
        "nextUpdate": _stamp(next_update),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": "11000000000000000000000000000000",
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": QE_MRSIGNER.hex().upper(),
        "isvprodid": 2,
        "tcbLevels": [
            {"tcb": {"isvsvn": svn}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": status}
            for svn, status in levels
        ],
    }
    return signed_document("enclaveIdentity", inner, pki.signing_key)


def make_crl(
    issuer: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[int] = (),
    *,
    next_update: datetime = NOW + timedelta(days=29),
) -> bytes:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(NOW - timedelta(days=1))
        .next_update(next_update)
        .add_extension(x509.CRLNumber(1), critical=False)
    )
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(NOW - timedelta(days=2))
            .build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def collateral(
    pki: Pki,
    *,
    tcb_doc: bytes | None = None,
    qe_doc: bytes | None = None,
    with_chains: bool = True,
    with_crls: bool = True,
    revoked_pck: Sequence[int] = (),
    revoked_by_root: Sequence[int] = (),
    crl_next_update: datetime = NOW + timedelta(days=29),
) -> RawCollateral:
    chain = pem(pki.signing, pki.root) if with_chains else None
    return RawCollateral(
        tcb_info=tcb_doc if tcb_doc is not None else tcb_info(pki),
        qe_identity=qe_doc if qe_doc is not None else qe_identity(pki),
        tcb_info_issuer_chain=chain,
        qe_identity_issuer_chain=chain,
        pck_crl=make_crl(pki.ca, pki.ca_key, revoked_pck, next_update=crl_next_update) if with_crls else None,
        pck_crl_issuer_chain=pem(pki.ca, pki.root) if with_crls else None,
        root_ca_crl=(
            make_crl(pki.root, pki.root_key, revoked_by_root, next_update=crl_next_update)
            if with_crls
            else None
        ),
    )


# --- CC event log --------------------------------------------------------------------------------


def make_ccel(events: Sequence[tuple[int, int, bytes]], padding: int = 256) -> tuple[bytes, list[bytes]]:
    """A CCEL holding (index, type, data) events, SHA-384 only; returns it and RTMR0..3 it replays to."""
    spec = (
        b"Spec ID Event03\x00"
        + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, 1)
        + struct.pack("<HH", 0x0C, 48)
        + b"\x00"
    )
    log = struct.pack("<II", 1, EV_NO_ACTION) + bytes(20) + struct.pack("<I", len(spec)) + spec
    rtmrs = [bytes(48)] * 4
    for index, event_type, data in events:
        digest = hashlib.sha384(data).digest()
        log += struct.pack("<IIIH", index, event_type, 1, 0x0C) + digest + struct.pack("<I", len(data)) + data
        if event_type != EV_NO_ACTION and 1 <= index <= 4:
            rtmrs[index - 1] = hashlib.sha384(rtmrs[index - 1] + digest).digest()
    return log + b"\xff" * padding, rtmrs


DEFAULT_EVENTS = (
    (1, EV_SEPARATOR, b"\x00\x00\x00\x00"),
    (2, EV_EFI_ACTION, b"Calling EFI Application from Boot Option"),
    (2, EV_NO_ACTION, b"StartupLocality\x00\x03"),
    (3, EV_EFI_ACTION, b"kernel command line"),
    (4, EV_SEPARATOR, b"\x00\x00\x00\x00"),
)
