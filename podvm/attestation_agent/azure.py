"""Azure confidential VMs (SNP or TDX behind the Hyper-V paravisor): evidence from the vTPM.

The paravisor exposes the hardware report through the vTPM: writing report data to NV index
0x01400002 makes it produce an HCL report at NV index 0x01400001 (header "HCLA", the SNP report or TD
report, then a runtime-data JSON whose SHA-256 is the hardware report's report_data[0:32] and whose
`user-data` echoes what was written); a TPM quote by the HCL attestation key (persistent handle
0x81000003) over the 24 SHA-256 PCRs carries the same report data as its nonce. SNP evidence adds the
VCEK from the Azure IMDS (THIM); TDX evidence adds a TD quote the IMDS makes from the TD report.
Upstream: `attester::az_snp_vtpm`, `az_tdx_vtpm`, crates `az-snp-vtpm`/`az-tdx-vtpm`; evidence v2.

Everything that shapes or checks the evidence is pure and tested against real Azure vectors. The vTPM
itself is behind `Vtpm`; `Tpm2ToolsVtpm` drives it with tpm2-tools (the pod VM image already ships
them for `tpm2_pcrextend`), which needs a real Azure CVM and is not exercised by the tests here.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from podvm.attestation_agent.errors import AttesterError, InitDataError

IMDS_URL = "http://169.254.169.254"
THIM_CERT_PATH = "/metadata/THIM/amd/certification"
TD_QUOTE_PATH = "/acc/tdquote"
HCL_REPORT_NV_INDEX = 0x01400001
REPORT_DATA_NV_INDEX = 0x01400002
AK_HANDLE = 0x81000003
INIT_DATA_PCR = 8
PCR_COUNT = 24
EVIDENCE_VERSION = 2
MAX_NONCE = 64

_HCL_MAGIC = b"HCLA"
_HW_REPORT_OFFSET = 0x20
_HW_REPORT_SLOT = 1184
_RUNTIME_HEADER = struct.Struct("<5I")  # data_size, version, report_type, hash_type, variable_data_size
_RUNTIME_OFFSET = _HW_REPORT_OFFSET + _HW_REPORT_SLOT
_VAR_DATA_OFFSET = _RUNTIME_OFFSET + _RUNTIME_HEADER.size
REPORT_TYPE_SNP = 2
REPORT_TYPE_TDX = 4
TD_REPORT_SIZE = 1024
# report_data inside the hardware report: SNP at 0x50; TDREPORT's REPORTMACSTRUCT at 128.
_HW_REPORT_DATA = {REPORT_TYPE_SNP: 0x50, REPORT_TYPE_TDX: 128}
_TPM_GENERATED = 0xFF544347
_TPM_ST_ATTEST_QUOTE = 0x8018


class AzureEvidenceError(AttesterError):
    """The vTPM or the IMDS produced something that is not valid Azure evidence for this request."""


@dataclass(frozen=True, slots=True)
class HclReport:
    raw: bytes
    report_type: int
    var_data: bytes

    @property
    def hw_report(self) -> bytes:
        size = _HW_REPORT_SLOT if self.report_type == REPORT_TYPE_SNP else TD_REPORT_SIZE
        return self.raw[_HW_REPORT_OFFSET : _HW_REPORT_OFFSET + size]

    def hw_report_data(self) -> bytes:
        offset = _HW_REPORT_OFFSET + _HW_REPORT_DATA[self.report_type]
        return self.raw[offset : offset + 64]

    def user_data(self) -> bytes:
        """The runtime data's `user-data` (hex in the JSON): the report data the guest asked for."""
        try:
            doc = json.loads(self.var_data)
            return bytes.fromhex(doc["user-data"])
        except (ValueError, KeyError, TypeError, RecursionError):
            raise AzureEvidenceError("HCL runtime data has no hex 'user-data'") from None


def parse_hcl_report(raw: bytes) -> HclReport:
    if len(raw) < _VAR_DATA_OFFSET or raw[:4] != _HCL_MAGIC:
        raise AzureEvidenceError("not an HCL report (no 'HCLA' header)")
    _, _, report_type, _, var_size = _RUNTIME_HEADER.unpack_from(raw, _RUNTIME_OFFSET)
    if report_type not in (REPORT_TYPE_SNP, REPORT_TYPE_TDX):
        raise AzureEvidenceError(f"HCL report type {report_type} is neither SNP (2) nor TDX (4)")
    if _VAR_DATA_OFFSET + var_size > len(raw):
        raise AzureEvidenceError("HCL runtime data runs past the end of the report")
    return HclReport(
        raw=raw, report_type=report_type, var_data=raw[_VAR_DATA_OFFSET : _VAR_DATA_OFFSET + var_size]
    )


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """A TPM2_Quote: `message` is the marshalled TPMS_ATTEST, `signature` the raw RSASSA signature."""

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "signature": self.signature.hex(),
            "message": self.message.hex(),
            "pcrs": [p.hex() for p in self.pcrs],
        }

    def nonce(self) -> bytes:
        """TPMS_ATTEST.extraData (big-endian: magic, type, qualifiedSigner TPM2B, extraData TPM2B)."""
        msg = self.message
        if len(msg) < 8 or struct.unpack_from(">IH", msg) != (_TPM_GENERATED, _TPM_ST_ATTEST_QUOTE):
            raise AzureEvidenceError("TPM quote message is not a TPMS_ATTEST quote")
        signer_size = _u16(msg, 6)
        offset = 8 + signer_size
        size = _u16(msg, offset)
        if offset + 2 + size > len(msg):
            raise AzureEvidenceError("TPM quote message is truncated")
        return msg[offset + 2 : offset + 2 + size]


def check_binding(hcl: HclReport, quote: TpmQuote, report_data: bytes) -> None:
    """The evidence answers this request: quote nonce and HCL user-data are the report data, and the
    hardware report covers the HCL runtime data (so a stale HCL report is caught here)."""
    if quote.nonce() != report_data:
        raise AzureEvidenceError("TPM quote nonce is not the requested report data")
    if hcl.user_data()[: len(report_data)] != report_data:
        raise AzureEvidenceError("HCL report user-data is not the requested report data (stale report?)")
    if hashlib.sha256(hcl.var_data).digest() != hcl.hw_report_data()[:32]:
        raise AzureEvidenceError("hardware report data does not cover the HCL runtime data")
    if len(quote.pcrs) != PCR_COUNT or any(len(p) != 32 for p in quote.pcrs):
        raise AzureEvidenceError(f"TPM quote needs {PCR_COUNT} SHA-256 PCR values")


def az_snp_evidence(hcl: HclReport, quote: TpmQuote, vcek_der: bytes) -> dict[str, Any]:
    if hcl.report_type != REPORT_TYPE_SNP:
        raise AzureEvidenceError("HCL report does not hold an SNP report")
    return {
        "version": EVIDENCE_VERSION,
        "tpm_quote": quote.to_json(),
        "hcl_report": _b64url_padded(hcl.raw),
        "vcek": _b64url_padded(vcek_der),
    }


def az_tdx_evidence(hcl: HclReport, quote: TpmQuote, td_quote: bytes) -> dict[str, Any]:
    if hcl.report_type != REPORT_TYPE_TDX:
        raise AzureEvidenceError("HCL report does not hold a TD report")
    return {
        "version": EVIDENCE_VERSION,
        "tpm_quote": quote.to_json(),
        "hcl_report": _b64url_padded(hcl.raw),
        "td_quote": _b64url_padded(td_quote),
    }


class Vtpm(Protocol):
    def hcl_report(self, report_data: bytes | None) -> bytes:
        """The HCL report, refreshed for `report_data` first unless it is None."""

    def quote(self, nonce: bytes) -> TpmQuote: ...

    def extend_pcr(self, index: int, sha256_digest: bytes) -> None: ...


class Tpm2ToolsVtpm:
    """The Azure vTPM through tpm2-tools (owner hierarchy, empty auth, as on Azure CVMs)."""

    REFRESH_DELAY = 3.0  # upstream waits this long for the paravisor to regenerate the report

    def hcl_report(self, report_data: bytes | None) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            if report_data is not None:
                self._write_report_data(report_data, Path(tmp) / "report-data")
                time.sleep(self.REFRESH_DELAY)
            out = Path(tmp) / "hcl"
            _tpm2("tpm2_nvread", "-C", "o", "-o", str(out), hex(HCL_REPORT_NV_INDEX))
            return out.read_bytes()

    def quote(self, nonce: bytes) -> TpmQuote:
        if len(nonce) > MAX_NONCE:
            raise AzureEvidenceError(f"TPM quote nonce is {len(nonce)} bytes, at most {MAX_NONCE}")
        with tempfile.TemporaryDirectory() as tmp:
            msg, sig, pcrs = (Path(tmp) / name for name in ("msg", "sig", "pcrs"))
            selection = "sha256:" + ",".join(str(i) for i in range(PCR_COUNT))
            _tpm2(
                "tpm2_quote",
                "-c",
                hex(AK_HANDLE),
                "-l",
                selection,
                "-q",
                nonce.hex(),
                "-g",
                "sha256",
                "-m",
                str(msg),
                "-s",
                str(sig),
                "-f",
                "plain",
            )
            _tpm2("tpm2_pcrread", selection, "-o", str(pcrs))
            values = pcrs.read_bytes()
            if len(values) != 32 * PCR_COUNT:
                raise AzureEvidenceError(f"tpm2_pcrread returned {len(values)} bytes of PCR values")
            return TpmQuote(
                signature=sig.read_bytes(),
                message=msg.read_bytes(),
                pcrs=tuple(values[i : i + 32] for i in range(0, len(values), 32)),
            )

    def extend_pcr(self, index: int, sha256_digest: bytes) -> None:
        _tpm2("tpm2_pcrextend", f"{index}:sha256={sha256_digest.hex()}")

    def _write_report_data(self, report_data: bytes, path: Path) -> None:
        path.write_bytes(report_data)
        index = hex(REPORT_DATA_NV_INDEX)
        try:
            _tpm2("tpm2_nvwrite", "-C", "o", "-i", str(path), index)
        except AzureEvidenceError:
            # Missing or sized for other data: (re)define it for this length, as upstream does.
            subprocess.run(["tpm2_nvundefine", "-C", "o", index], capture_output=True, check=False)
            _tpm2(
                "tpm2_nvdefine", "-C", "o", "-s", str(len(report_data)), "-a", "ownerread|ownerwrite", index
            )
            _tpm2("tpm2_nvwrite", "-C", "o", "-i", str(path), index)


class AzureImds:
    """The Azure Instance Metadata Service endpoints the attesters need."""

    def __init__(self, base_url: str = IMDS_URL, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def vcek_der(self) -> bytes:
        doc = await self._json("GET", THIM_CERT_PATH, None)
        pem = doc.get("vcekCert")
        if not isinstance(pem, str):
            raise AzureEvidenceError("IMDS THIM answer has no 'vcekCert'")
        return _pem_certificate(pem)

    async def td_quote(self, td_report: bytes) -> bytes:
        report = base64.urlsafe_b64encode(td_report).rstrip(b"=").decode("ascii")
        doc = await self._json("POST", TD_QUOTE_PATH, {"report": report})
        quote = doc.get("quote")
        if not isinstance(quote, str):
            raise AzureEvidenceError("IMDS TD quote answer has no 'quote'")
        try:
            return base64.urlsafe_b64decode(quote + "=" * (-len(quote) % 4))
        except ValueError:
            raise AzureEvidenceError("IMDS TD quote is not base64url") from None

    async def _json(self, method: str, path: str, body: dict[str, str] | None) -> dict[str, Any]:
        headers = {"Metadata": "true", "Accept": "application/json"}
        try:
            async with (
                aiohttp.ClientSession(timeout=self._timeout) as session,
                session.request(method, self._base + path, json=body, headers=headers) as resp,
            ):
                if resp.status != 200:
                    raise AzureEvidenceError(f"IMDS {path} answered HTTP {resp.status}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise AzureEvidenceError(f"IMDS {path} failed: {exc}") from None
        if not isinstance(doc, dict):
            raise AzureEvidenceError(f"IMDS {path} did not answer a JSON object")
        return doc


class AzSnpVtpmAttester:
    tee = "az-snp-vtpm"

    def __init__(self, vtpm: Vtpm, imds: AzureImds) -> None:
        self._vtpm = vtpm
        self._imds = imds

    async def get_evidence(self, report_data: bytes) -> Any:
        hcl, quote = await _hcl_and_quote(self._vtpm, report_data)
        return az_snp_evidence(hcl, quote, await self._imds.vcek_der())

    async def bind_init_data(self, digest: bytes) -> bool:
        return await _extend_init_data(self._vtpm, digest)


class AzTdxVtpmAttester:
    tee = "az-tdx-vtpm"

    def __init__(self, vtpm: Vtpm, imds: AzureImds) -> None:
        self._vtpm = vtpm
        self._imds = imds

    async def get_evidence(self, report_data: bytes) -> Any:
        hcl, quote = await _hcl_and_quote(self._vtpm, report_data)
        return az_tdx_evidence(hcl, quote, await self._imds.td_quote(hcl.hw_report))

    async def bind_init_data(self, digest: bytes) -> bool:
        return await _extend_init_data(self._vtpm, digest)


async def _hcl_and_quote(vtpm: Vtpm, report_data: bytes) -> tuple[HclReport, TpmQuote]:
    if not 0 < len(report_data) <= MAX_NONCE:
        raise AzureEvidenceError(f"report data must be 1..{MAX_NONCE} bytes, got {len(report_data)}")
    hcl = parse_hcl_report(await asyncio.to_thread(vtpm.hcl_report, report_data))
    quote = await asyncio.to_thread(vtpm.quote, report_data)
    check_binding(hcl, quote, report_data)
    return hcl, quote


async def _extend_init_data(vtpm: Vtpm, digest: bytes) -> bool:
    """Azure has no launch-time init-data field: the digest is extended into PCR 8 instead (the
    verifier expects PCR8 == SHA256(0^32 || digest), so only a SHA-256 digest fits)."""
    if len(digest) != 32:
        raise InitDataError(f"Azure binds only SHA-256 init data (32 bytes), got {len(digest)} bytes")
    await asyncio.to_thread(vtpm.extend_pcr, INIT_DATA_PCR, digest)
    return True


def _tpm2(*argv: str) -> None:
    try:
        result = subprocess.run(list(argv), capture_output=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AzureEvidenceError(f"{argv[0]} could not run: {exc}") from None
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", errors="replace").strip()[:300]
        raise AzureEvidenceError(f"{argv[0]} failed ({result.returncode}): {message}")


def _pem_certificate(pem: str) -> bytes:
    """The DER inside a PEM CERTIFICATE block, unparsed: the KBS verifies it (AMD has issued VCEKs
    with serial number 0, which strict X.509 parsers reject)."""
    match = re.search(r"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----", pem)
    if match is None:
        raise AzureEvidenceError("IMDS THIM 'vcekCert' is not a PEM certificate")
    try:
        return base64.b64decode("".join(match.group(1).split()), validate=True)
    except ValueError:
        raise AzureEvidenceError("IMDS THIM 'vcekCert' is not a PEM certificate") from None


def _b64url_padded(data: bytes) -> str:
    """serde_with `Base64<UrlSafe>` (padded), as upstream's evidence carries HCL report and certs."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def _u16(data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise AzureEvidenceError("TPM quote message is truncated")
    return int(struct.unpack_from(">H", data, offset)[0])
