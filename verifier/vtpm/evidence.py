"""The JSON envelope shared by upstream's `az-snp-vtpm` and `az-tdx-vtpm` evidence, versions 0 to 2.

v1/v2: `{"version": N, "tpm_quote": {"signature": hex, "message": hex, "pcrs": [hex, ...]},
"hcl_report": b64url, ...}`; v2 differs only in promising the HCL user-data carries the report
data. v0 has no version and byte arrays instead (`pcrs` as arrays of 32). Upstream tries v2, v1,
then v0; here a document with a `version` must be v1/v2 and one without must be v0, which accepts
the same real evidence and leaves no guessing. Unknown fields are ignored, as serde does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from verifier.errors import EvidenceFormatError
from verifier.jsonutil import JsonError, strict_loads
from verifier.vtpm.encoding import byte_array, hex_bytes
from verifier.vtpm.quote import SHA256_SIZE, TpmQuote

MAX_EVIDENCE_SIZE = 256 * 1024  # a real v0 document (byte arrays) is about 36 KiB
VERSIONS = (1, 2)


def load_document(evidence: bytes, what: str) -> tuple[dict[str, Any], int]:
    """The evidence object and its version (0 when it has none)."""
    if len(evidence) > MAX_EVIDENCE_SIZE:
        raise EvidenceFormatError(f"{what} is larger than {MAX_EVIDENCE_SIZE} bytes")
    try:
        doc = strict_loads(evidence)
    except JsonError as exc:
        raise EvidenceFormatError(f"{what} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EvidenceFormatError(f"{what} is not a JSON object")
    if "version" not in doc:
        return doc, 0
    version = doc["version"]
    if type(version) is not int or version not in VERSIONS:
        raise EvidenceFormatError(f"{what} version {str(version)[:10]} is not one of {VERSIONS}")
    return doc, version


def field(doc: dict[str, Any], name: str, what: str) -> Any:
    if name not in doc:
        raise EvidenceFormatError(f"{what} has no {name!r}")
    return doc[name]


def _pcr_list(value: Any, decode: Callable[[Any, str], bytes]) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise EvidenceFormatError("TPM quote pcrs is not a list")
    pcrs = tuple(decode(item, f"PCR {index}") for index, item in enumerate(value))
    for index, pcr in enumerate(pcrs):
        if len(pcr) != SHA256_SIZE:
            raise EvidenceFormatError(f"PCR {index} is {len(pcr)} bytes, not a SHA-256 value")
    return pcrs


def tpm_quote(value: Any, version: int) -> TpmQuote:
    """A `tpm_quote` (v1/v2, hex) or v0 `quote` (byte arrays) object."""
    if not isinstance(value, dict):
        raise EvidenceFormatError("TPM quote is not a JSON object")
    if version == 0:
        return TpmQuote(
            signature=byte_array(field(value, "signature", "TPM quote"), "TPM quote signature"),
            message=byte_array(field(value, "message", "TPM quote"), "TPM quote message"),
            pcrs=_pcr_list(field(value, "pcrs", "TPM quote"), byte_array),
        )
    return TpmQuote(
        signature=hex_bytes(field(value, "signature", "TPM quote"), "TPM quote signature"),
        message=hex_bytes(field(value, "message", "TPM quote"), "TPM quote message"),
        pcrs=_pcr_list(field(value, "pcrs", "TPM quote"), hex_bytes),
    )
