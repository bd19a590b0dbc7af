"""Fabricates Azure vTPM evidence for tests that need no cloud: HCL reports, AK keys and TPM quotes.

Written from the TPM 2.0 structures (TPMS_ATTEST, TPML_PCR_SELECTION) and the HCL report layout
independently of the verifier's parsers. The hardware halves reuse `snp_builder` and `tdx_builder`:
a test AMD VCEK signs an SNP report, or a test Intel PKI a TD quote, whose REPORT_DATA opens with
SHA-256 of the HCL variable data, as the paravisor arranges it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.verifier import snp_builder as snp
from tests.verifier import tdx_builder as tdx

TPM_GENERATED = 0xFF544347
ST_ATTEST_QUOTE = 0x8018
ALG_SHA1 = 0x0004
ALG_SHA256 = 0x000B
NONCE = b"challenge"
HCL_SIZE = 2600


def ak_key(label: str = "hcl-ak") -> rsa.RSAPrivateKey:
    return snp.rsa_key(label)


def _b64url(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwk(key: rsa.RSAPublicKey, kid: str) -> dict[str, Any]:
    numbers = key.public_numbers()
    return {"kid": kid, "key_ops": ["sign"], "kty": "RSA", "e": _b64url(numbers.e), "n": _b64url(numbers.n)}


def var_data(
    ak: rsa.RSAPublicKey, user_data: bytes = bytes(64), *, keys: list[dict[str, Any]] | None = None
) -> bytes:
    """The paravisor's JSON: AK and EK as JWKs, VM configuration, user-data as upper-case hex."""
    doc = {
        "keys": keys
        if keys is not None
        else [jwk(ak, "HCLAkPub"), jwk(ak_key("hcl-ek").public_key(), "HCLEkPub")],
        "vm-configuration": {"console-enabled": True, "secure-boot": True, "tpm-enabled": True},
        "user-data": user_data.hex().upper(),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def hcl_report(
    hw_report: bytes,
    var: bytes,
    *,
    report_type: int = 2,
    hash_type: int = 1,
    var_size: int | None = None,
    magic: bytes = b"HCLA",
    size: int = HCL_SIZE,
) -> bytes:
    """Header (0x20), hardware report in a 1184-byte slot, runtime-data header, variable data, zero fill."""
    var_len = len(var) if var_size is None else var_size
    out = struct.pack("<4s7I", magic, 2, 0x4D4 + len(var), 2, 0, 0, 0, 0)
    out += hw_report.ljust(1184, b"\0")
    out += struct.pack("<5I", 20 + len(var), 1, report_type, hash_type, var_len) + var
    return out.ljust(size, b"\0")


def attest(
    nonce: bytes,
    pcrs: Sequence[bytes],
    *,
    magic: int = TPM_GENERATED,
    attest_type: int = ST_ATTEST_QUOTE,
    banks: Sequence[tuple[int, bytes]] | None = None,
    digest: bytes | None = None,
    trailing: bytes = b"",
) -> bytes:
    """A TPMS_ATTEST quoting `pcrs` (by default one SHA-256 bank selecting PCR 0..len-1)."""
    if banks is None:
        bitmap = bytearray(3)
        for index in range(len(pcrs)):
            bitmap[index // 8] |= 1 << (index % 8)
        banks = [(ALG_SHA256, bytes(bitmap))]
    pcr_digest = digest if digest is not None else hashlib.sha256(b"".join(pcrs)).digest()
    signer = struct.pack(">H", ALG_SHA256) + hashlib.sha256(b"ak name").digest()
    out = struct.pack(">IH", magic, attest_type)
    out += struct.pack(">H", len(signer)) + signer
    out += struct.pack(">H", len(nonce)) + nonce
    out += struct.pack(">QIIB", 123456789, 7, 3, 1)  # clock, resetCount, restartCount, safe
    out += struct.pack(">Q", 0x2020_0108_0000_0000)  # firmwareVersion
    out += struct.pack(">I", len(banks))
    for alg, selected in banks:
        out += struct.pack(">HB", alg, len(selected)) + selected
    return out + struct.pack(">H", len(pcr_digest)) + pcr_digest + trailing


def sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return key.sign(message, padding.PKCS1v15(), hashes.SHA256())


@dataclass(frozen=True)
class Quote:
    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]

    def json(self, version: int) -> dict[str, Any]:
        if version == 0:
            return {
                "signature": list(self.signature),
                "message": list(self.message),
                "pcrs": [list(p) for p in self.pcrs],
            }
        return {
            "signature": self.signature.hex(),
            "message": self.message.hex(),
            "pcrs": [p.hex() for p in self.pcrs],
        }


def default_pcrs() -> tuple[bytes, ...]:
    """24 SHA-256 PCRs; PCR8 (init data) left at zero, as when no init data was measured."""
    return tuple(bytes(32) if i == 8 else hashlib.sha256(bytes([i])).digest() for i in range(24))


def make_quote(
    key: rsa.RSAPrivateKey, nonce: bytes, pcrs: Sequence[bytes] | None = None, **kwargs: Any
) -> Quote:
    values = tuple(default_pcrs() if pcrs is None else pcrs)
    message = attest(nonce, values, **kwargs)
    return Quote(sign(key, message), message, values)


def init_data_pcr(digest: bytes) -> bytes:
    return hashlib.sha256(bytes(32) + digest).digest()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def vcek_pem(der: bytes) -> str:
    body = base64.b64encode(der).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"


def snp_evidence(quote: Quote, hcl: bytes, vcek_der: bytes, version: int) -> bytes:
    """Upstream's az-snp-vtpm evidence: v0 byte arrays and PEM, v1/v2 hex quote and b64url parts."""
    if version == 0:
        doc: dict[str, Any] = {"quote": quote.json(0), "report": list(hcl), "vcek": vcek_pem(vcek_der)}
    else:
        doc = {
            "version": version,
            "tpm_quote": quote.json(version),
            "hcl_report": b64url(hcl),
            "vcek": b64url(vcek_der),
        }
    return json.dumps(doc).encode()


def tdx_evidence(quote: Quote, hcl: bytes, td_quote: bytes, version: int) -> bytes:
    """Upstream's az-tdx-vtpm evidence: v0 byte arrays, v1/v2 hex quote and b64url parts."""
    if version == 0:
        doc: dict[str, Any] = {
            "tpm_quote": quote.json(0),
            "hcl_report": list(hcl),
            "td_quote": list(td_quote),
        }
    else:
        doc = {
            "version": version,
            "tpm_quote": quote.json(version),
            "hcl_report": b64url(hcl),
            "td_quote": b64url(td_quote),
        }
    return json.dumps(doc).encode()


def bound_report_data(var: bytes) -> bytes:
    """REPORT_DATA as the paravisor fills it: SHA-256 of the variable data, zero-padded to 64."""
    return hashlib.sha256(var).digest().ljust(64, b"\0")


@dataclass(frozen=True)
class AzSnpCase:
    """A valid Azure SNP vTPM attestation: SNP case (PKI, VCEK, report binding `var`), HCL, quote."""

    snp: snp.SnpCase
    ak: rsa.RSAPrivateKey
    var: bytes
    hcl: bytes
    nonce: bytes
    quote: Quote

    def evidence(
        self,
        version: int = 2,
        *,
        quote: Quote | None = None,
        hcl: bytes | None = None,
        vcek_der: bytes | None = None,
    ) -> bytes:
        return snp_evidence(
            quote or self.quote, self.hcl if hcl is None else hcl, vcek_der or self.snp.vek_der, version
        )

    def with_var_data(self, var: bytes, **hcl_kwargs: Any) -> AzSnpCase:
        """Other variable data, with the SNP report re-signed to bind it (a genuine paravisor's view)."""
        snp_case = self.snp.resigned(replace(self.snp.spec, report_data=bound_report_data(var)))
        return replace(self, snp=snp_case, var=var, hcl=hcl_report(snp_case.report, var, **hcl_kwargs))

    def with_spec(self, **changes: Any) -> AzSnpCase:
        """The same variable data in an SNP report with other fields, signed by the same VCEK."""
        snp_case = self.snp.resigned(replace(self.snp.spec, **changes))
        return replace(self, snp=snp_case, hcl=hcl_report(snp_case.report, self.var))


def make_az_snp_case(
    nonce: bytes = NONCE,
    *,
    pcrs: Sequence[bytes] | None = None,
    spec: snp.ReportSpec | None = None,
    pki: snp.TestPki | None = None,
) -> AzSnpCase:
    """Evidence valid as v0, v1 and v2: the HCL user-data carries `nonce` (zero-padded to 64)."""
    ak = ak_key()
    var = var_data(ak.public_key(), nonce.ljust(64, b"\0"))
    spec = replace(spec or snp.ReportSpec(version=2), report_data=bound_report_data(var))
    snp_case = snp.make_case(spec, pki=pki)
    return AzSnpCase(
        snp=snp_case,
        ak=ak,
        var=var,
        hcl=hcl_report(snp_case.report, var),
        nonce=nonce,
        quote=make_quote(ak, nonce, pcrs),
    )


@dataclass(frozen=True)
class AzTdxCase:
    """A valid Azure TDX vTPM attestation: test Intel PKI, TD quote binding `var`, HCL, vTPM quote."""

    pki: tdx.Pki
    spec: tdx.QuoteSpec
    ak: rsa.RSAPrivateKey
    var: bytes
    hcl: bytes
    td_quote: bytes
    nonce: bytes
    quote: Quote

    def evidence(
        self,
        version: int = 2,
        *,
        quote: Quote | None = None,
        hcl: bytes | None = None,
        td_quote: bytes | None = None,
    ) -> bytes:
        return tdx_evidence(
            quote or self.quote,
            self.hcl if hcl is None else hcl,
            self.td_quote if td_quote is None else td_quote,
            version,
        )

    def with_var_data(self, var: bytes) -> AzTdxCase:
        """Other variable data, bound by a new TD quote (a genuine paravisor's view)."""
        spec = replace(self.spec, report_data=bound_report_data(var))
        hcl = hcl_report(TD_REPORT, var, report_type=4)
        return replace(self, spec=spec, var=var, hcl=hcl, td_quote=tdx.make_quote(self.pki, spec))


TD_REPORT = bytes([0x81]) * 1024  # the HCL's own TDREPORT: carried along, never trusted


def make_az_tdx_case(
    nonce: bytes = NONCE, *, pki: tdx.Pki | None = None, spec: tdx.QuoteSpec | None = None
) -> AzTdxCase:
    """Evidence valid as v0, v1 and v2 against `tdx_verifier(case.pki)`."""
    ak = ak_key()
    var = var_data(ak.public_key(), nonce.ljust(64, b"\0"))
    pki = pki or tdx.make_pki()
    spec = replace(spec or tdx.QuoteSpec(), report_data=bound_report_data(var))
    return AzTdxCase(
        pki=pki,
        spec=spec,
        ak=ak,
        var=var,
        hcl=hcl_report(TD_REPORT, var, report_type=4),
        td_quote=tdx.make_quote(pki, spec),
        nonce=nonce,
        quote=make_quote(ak, nonce),
    )
