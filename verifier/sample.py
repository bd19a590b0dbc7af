"""The `sample` TEE: no hardware and no cryptography, for protocol tests and demos.

Evidence is upstream's `{"svn": "1", "report_data": "<base64>"}`; only REPORT_DATA is checked, so the
default attestation policy must never trust these claims.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from verifier.base import Claims
from verifier.errors import EvidenceFormatError, VerificationError

MAX_EVIDENCE_SIZE = 64 * 1024


def _evidence_fields(evidence: bytes) -> tuple[str, str]:
    if len(evidence) > MAX_EVIDENCE_SIZE:
        raise EvidenceFormatError(f"sample evidence is {len(evidence)} bytes, more than {MAX_EVIDENCE_SIZE}")
    try:
        doc: Any = json.loads(evidence)
    except (ValueError, RecursionError) as exc:
        raise EvidenceFormatError(f"sample evidence is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EvidenceFormatError("sample evidence must be a JSON object")
    svn, report_data = doc.get("svn"), doc.get("report_data", "")
    if not isinstance(svn, str):
        raise EvidenceFormatError("sample evidence needs a string 'svn'")
    if not isinstance(report_data, str):
        raise EvidenceFormatError("sample evidence 'report_data' must be a base64 string")
    return svn, report_data


class SampleVerifier:
    tee = "sample"

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        svn, report_data = _evidence_fields(evidence)
        try:
            decoded = base64.b64decode(report_data, validate=True)
        except (binascii.Error, ValueError):
            raise EvidenceFormatError("sample 'report_data' is not standard base64") from None
        if decoded != expected_report_data:
            raise VerificationError(
                "report_data_mismatch",
                f"report_data is {decoded.hex()}, expected {expected_report_data.hex()}",
            )
        claims: Claims = {
            "svn": svn,
            "report_data": report_data,
            "launch_digest": "abcde",
            "platform_version": {"major": 1, "minor": 4},
            "debug": False,
        }
        if expected_init_data_hash is not None:
            # Not verifiable here; passed through so init-data features can be tested (as upstream).
            claims["init_data"] = base64.b64encode(expected_init_data_hash).decode()
        return claims
