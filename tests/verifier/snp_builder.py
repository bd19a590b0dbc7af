"""Fabricates SNP-shaped PKIs, endorsement keys and signed reports for tests that need no hardware.

A test ARK (RSA, self-signed with RSASSA-PSS SHA-384 salt 48) signs a test ASK and ASVK, which sign
EC P-384 VCEKs/VLEKs carrying AMD's TCB and HWID extensions; reports are laid out and signed the way
the firmware does it. The report and JSON encoders here are written from AMD's table independently
of the verifier's, so the tests compare two implementations rather than one with itself.
"""

from __future__ import annotations

import functools
import json
import struct
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from verifier.snp.anchors import AmdRoots
from verifier.snp.report import Generation, TcbVersion

PSS_SHA384_48 = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
CPUID = {
    Generation.MILAN: (0x19, 0x01, 0x01),
    Generation.GENOA: (0x19, 0x11, 0x01),
    Generation.TURIN: (0x1A, 0x02, 0x00),
}
DAY = timedelta(days=1)


def now() -> datetime:
    return datetime.now(UTC)


@functools.cache
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA key per label for the whole run (key generation is the slow part)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Engineering"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Micro Devices"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _der_int(value: int) -> bytes:
    body = value.to_bytes(max(1, (value.bit_length() + 8) // 8), "big")
    return bytes([0x02, len(body)]) + body


def _sign_cert(
    builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey, *, pss: bool = True
) -> x509.Certificate:
    if pss:
        return builder.sign(key, hashes.SHA384(), rsa_padding=PSS_SHA384_48)
    return builder.sign(key, hashes.SHA384())


def _ca_cert(
    cn: str,
    issuer_cn: str,
    public_key: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return _sign_cert(builder, signer)


@dataclass(frozen=True)
class TestPki:
    """ARK/ASK/ASVK of one fabricated product line, with their private keys."""

    generation: Generation
    ark: x509.Certificate
    ask: x509.Certificate
    asvk: x509.Certificate
    ask_key: rsa.RSAPrivateKey
    asvk_key: rsa.RSAPrivateKey

    def anchors(self) -> dict[Generation, AmdRoots]:
        return {self.generation: AmdRoots.checked(ark=self.ark, ask=self.ask, asvk=self.asvk)}


def make_pki(
    generation: Generation = Generation.MILAN,
    *,
    label: str = "test",
    ask_not_after: datetime | None = None,
) -> TestPki:
    """A product line's CA set; a different `label` gives different keys (another "AMD")."""
    gen = generation.value
    start = now() - 30 * DAY
    end = now() + 3650 * DAY
    ark_key, ask_key, asvk_key = rsa_key(f"{label}-ark"), rsa_key(f"{label}-ask"), rsa_key(f"{label}-asvk")
    ark = _ca_cert(f"ARK-{gen}", f"ARK-{gen}", ark_key.public_key(), ark_key, start, end)
    ask = _ca_cert(f"SEV-{gen}", f"ARK-{gen}", ask_key.public_key(), ark_key, start, ask_not_after or end)
    asvk = _ca_cert(f"SEV-VLEK-{gen}", f"ARK-{gen}", asvk_key.public_key(), ark_key, start, end)
    return TestPki(generation, ark, ask, asvk, ask_key, asvk_key)


def default_chip_id(generation: Generation) -> bytes:
    if generation is Generation.TURIN:
        return bytes(range(0xA0, 0xA8)) + bytes(56)
    return bytes(range(0x40, 0x80))


def default_tcb(generation: Generation) -> TcbVersion:
    fmc = 1 if generation is Generation.TURIN else None
    return TcbVersion(bootloader=3, tee=0, snp=8, microcode=115, fmc=fmc)


def make_vek(
    pki: TestPki,
    *,
    vlek: bool = False,
    chip_id: bytes | None = None,
    tcb: TcbVersion | None = None,
    hwid_encoding: str = "raw",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    signer: rsa.RSAPrivateKey | None = None,
    pss: bool = True,
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A VCEK (or VLEK) private key and certificate DER with TCB and (VCEK only) HWID extensions.

    `hwid_encoding`: "raw" (64 bytes, as older KDS certificates), "octet" (DER OCTET STRING) or "none".
    """
    gen = pki.generation
    tcb = tcb or default_tcb(gen)
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("SEV-VLEK" if vlek else "SEV-VCEK"))
        .issuer_name(pki.asvk.subject if vlek else pki.ask.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now() - DAY)
        .not_valid_after(not_after or now() + 365 * DAY)
    )
    spls = {1: tcb.bootloader, 2: tcb.tee, 3: tcb.snp, 8: tcb.microcode}
    if tcb.fmc is not None:
        spls[9] = tcb.fmc
    for arc, level in spls.items():
        oid = x509.ObjectIdentifier(f"1.3.6.1.4.1.3704.1.3.{arc}")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, _der_int(level)), critical=False)
    hwid = chip_id if chip_id is not None else default_chip_id(gen)
    if not vlek and hwid_encoding != "none":
        value = hwid if hwid_encoding == "raw" else bytes([0x04, len(hwid)]) + hwid
        oid = x509.ObjectIdentifier("1.3.6.1.4.1.3704.1.4")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    ca_key = signer or (pki.asvk_key if vlek else pki.ask_key)
    return key, _sign_cert(builder, ca_key, pss=pss).public_bytes(Encoding.DER)


def _tcb_bytes(tcb: TcbVersion) -> bytes:
    if tcb.fmc is not None:
        return bytes([tcb.fmc, tcb.bootloader, tcb.tee, tcb.snp, 0, 0, 0, tcb.microcode])
    return bytes([tcb.bootloader, tcb.tee, 0, 0, 0, 0, tcb.snp, tcb.microcode])


def _tcb_json(tcb: TcbVersion) -> dict[str, int | None]:
    return {
        "fmc": tcb.fmc,
        "bootloader": tcb.bootloader,
        "tee": tcb.tee,
        "snp": tcb.snp,
        "microcode": tcb.microcode,
    }


@dataclass(frozen=True)
class ReportSpec:
    """Every field of an attestation report; defaults describe a healthy Milan guest at VMPL 0."""

    generation: Generation = Generation.MILAN
    version: int = 3
    guest_svn: int = 4
    policy: int = 0x30000
    family_id: bytes = b"\x01" + bytes(15)
    image_id: bytes = b"\x02" + bytes(15)
    vmpl: int = 0
    sig_algo: int = 1
    plat_info: int = 0x1
    key_info: int = 0
    report_data: bytes = bytes(range(64))
    measurement: bytes = bytes(range(100, 148))
    host_data: bytes = bytes(32)
    id_key_digest: bytes = bytes(48)
    author_key_digest: bytes = bytes(48)
    report_id: bytes = bytes(range(32))
    report_id_ma: bytes = b"\xff" * 32
    chip_id: bytes | None = None
    tcb: TcbVersion | None = None
    current: tuple[int, int, int] = (1, 55, 40)  # major, minor, build
    launch_mit_vector: int = 0
    current_mit_vector: int = 0
    cpuid: tuple[int, int, int] | None = None

    @property
    def effective_chip_id(self) -> bytes:
        return self.chip_id if self.chip_id is not None else default_chip_id(self.generation)

    @property
    def effective_tcb(self) -> TcbVersion:
        return self.tcb or default_tcb(self.generation)

    @property
    def effective_cpuid(self) -> tuple[int, int, int]:
        return self.cpuid or CPUID[self.generation]


def unsigned_report(spec: ReportSpec) -> bytearray:
    """The 1184 report bytes with a zero signature (AMD SNP ABI, Table "ATTESTATION_REPORT")."""
    out = bytearray(0x4A0)
    tcb = _tcb_bytes(spec.effective_tcb)
    struct.pack_into(
        "<IIQ16s16sII8sQI",
        out,
        0,
        spec.version,
        spec.guest_svn,
        spec.policy,
        spec.family_id,
        spec.image_id,
        spec.vmpl,
        spec.sig_algo,
        tcb,
        spec.plat_info,
        spec.key_info,
    )
    struct.pack_into(
        "<64s48s32s48s48s32s32s8s",
        out,
        0x50,
        spec.report_data,
        spec.measurement,
        spec.host_data,
        spec.id_key_digest,
        spec.author_key_digest,
        spec.report_id,
        spec.report_id_ma,
        tcb,
    )
    if spec.version >= 3:
        struct.pack_into("<BBB", out, 0x188, *spec.effective_cpuid)
    major, minor, build = spec.current
    struct.pack_into(
        "<64s8sBBBxBBBx8s",
        out,
        0x1A0,
        spec.effective_chip_id,
        tcb,
        build,
        minor,
        major,
        build,
        minor,
        major,
        tcb,
    )
    if spec.version >= 5:
        struct.pack_into("<QQ", out, 0x1F8, spec.launch_mit_vector, spec.current_mit_vector)
    return out


def sign_report(raw: bytes | bytearray, key: ec.EllipticCurvePrivateKey) -> bytes:
    """Sign bytes 0..0x29F with ECDSA P-384/SHA-384, r and s stored little-endian in 72 bytes each."""
    out = bytearray(raw)
    r, s = decode_dss_signature(key.sign(bytes(out[:0x2A0]), ec.ECDSA(hashes.SHA384())))
    out[0x2A0:0x2E8] = r.to_bytes(72, "little")
    out[0x2E8:0x330] = s.to_bytes(72, "little")
    return bytes(out)


def build_report(spec: ReportSpec, key: ec.EllipticCurvePrivateKey) -> bytes:
    return sign_report(unsigned_report(spec), key)


def evidence_json(
    spec: ReportSpec, signed_report: bytes, cert_chain: list[tuple[str, bytes]] | None
) -> bytes:
    """Upstream's SnpEvidence JSON (sev crate serde shape) for `spec`, signature taken from the report."""
    tcb = _tcb_json(spec.effective_tcb)
    major, minor, build = spec.current
    fam, mod, step = spec.effective_cpuid
    has_cpuid = spec.version >= 3
    has_mit = spec.version >= 5
    report = {
        "version": spec.version,
        "guest_svn": spec.guest_svn,
        "policy": spec.policy,
        "family_id": list(spec.family_id),
        "image_id": list(spec.image_id),
        "vmpl": spec.vmpl,
        "sig_algo": spec.sig_algo,
        "current_tcb": tcb,
        "plat_info": spec.plat_info,
        "key_info": spec.key_info,
        "report_data": list(spec.report_data),
        "measurement": list(spec.measurement),
        "host_data": list(spec.host_data),
        "id_key_digest": list(spec.id_key_digest),
        "author_key_digest": list(spec.author_key_digest),
        "report_id": list(spec.report_id),
        "report_id_ma": list(spec.report_id_ma),
        "reported_tcb": tcb,
        "cpuid_fam_id": fam if has_cpuid else None,
        "cpuid_mod_id": mod if has_cpuid else None,
        "cpuid_step": step if has_cpuid else None,
        "chip_id": list(spec.effective_chip_id),
        "committed_tcb": tcb,
        "current": {"major": major, "minor": minor, "build": build},
        "committed": {"major": major, "minor": minor, "build": build},
        "launch_tcb": tcb,
        "launch_mit_vector": spec.launch_mit_vector if has_mit else None,
        "current_mit_vector": spec.current_mit_vector if has_mit else None,
        "signature": {"r": list(signed_report[0x2A0:0x2E8]), "s": list(signed_report[0x2E8:0x330])},
    }
    chain = None if cert_chain is None else [{"cert_type": t, "data": list(d)} for t, d in cert_chain]
    return json.dumps({"attestation_report": report, "cert_chain": chain}).encode()


@dataclass(frozen=True)
class SnpCase:
    """A complete, valid SNP attestation: PKI, endorsement key, report spec and signed report."""

    pki: TestPki
    vek_key: ec.EllipticCurvePrivateKey
    vek_der: bytes
    spec: ReportSpec
    report: bytes

    def evidence(
        self, *, with_chain: bool = True, extra_certs: list[tuple[str, bytes]] | None = None
    ) -> bytes:
        kind = "VLEK" if (self.spec.key_info >> 2) & 7 == 1 else "VCEK"
        chain = [(kind, self.vek_der), *(extra_certs or [])] if with_chain else None
        return evidence_json(self.spec, self.report, chain)

    def resigned(self, spec: ReportSpec) -> SnpCase:
        """The same key signing a different report (a genuine key with other content)."""
        return replace(self, spec=spec, report=build_report(spec, self.vek_key))


def make_case(
    spec: ReportSpec | None = None,
    *,
    pki: TestPki | None = None,
    vek_chip_id: bytes | None = None,
    vek_tcb: TcbVersion | None = None,
    hwid_encoding: str = "raw",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> SnpCase:
    """A valid case for `spec`; the `vek_*` overrides make the certificate disagree with the report."""
    spec = spec or ReportSpec()
    pki = pki or make_pki(spec.generation)
    key, der = make_vek(
        pki,
        vlek=(spec.key_info >> 2) & 7 == 1,
        chip_id=vek_chip_id if vek_chip_id is not None else spec.effective_chip_id,
        tcb=vek_tcb or spec.effective_tcb,
        hwid_encoding=hwid_encoding,
        not_before=not_before,
        not_after=not_after,
    )
    return SnpCase(pki=pki, vek_key=key, vek_der=der, spec=spec, report=build_report(spec, key))
