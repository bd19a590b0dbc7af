"""Shared pieces of the verdict property tests: flipping a byte, naming a verdict, and what an SNP
report changed at one byte must be refused with (the SNP and Azure SNP vTPM tests both need it)."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import settings
from hypothesis import strategies as st

from verifier.errors import VerificationError
from verifier.snp import report as rpt
from verifier.snp.report import Generation

VERDICTS = settings(max_examples=80, deadline=None)
ACCEPTED = "accepted"
MALFORMED = "malformed_evidence"
masks = st.integers(min_value=1, max_value=255)

SNP_SIGNATURE_END = rpt.OFF_SIGNATURE_S + rpt.SIGNATURE_COMPONENT_SIZE
# Milan's TCB_VERSION bytes that carry a security patch level (the rest are reserved).
MILAN_TCB_BYTES = (0, 1, 6, 7)


def flipped(data: bytes, offset: int, mask: int) -> bytes:
    out = bytearray(data)
    out[offset] ^= mask
    return bytes(out)


def verdict(call: Callable[[], object]) -> str:
    """ "accepted", or the reason code `call` was refused with."""
    try:
        call()
    except VerificationError as exc:
        return exc.reason
    return ACCEPTED


def _u32(raw: bytes, offset: int) -> int:
    return int.from_bytes(raw[offset : offset + 4], "little")


def snp_expected_reason(original: bytes, changed: bytes, offset: int, *, vlek: str = "chain_invalid") -> str:
    """What a Milan report signed by its VCEK, changed at `offset`, must be refused with: written from
    AMD's report layout and the verifier's documented check order (header, product, key binding,
    signature). `vlek`: the reason when the report now claims a VLEK signature (none is at hand)."""
    version = _u32(changed, rpt.OFF_VERSION)
    if not 2 <= version <= 5:
        return "unsupported_version"
    if _u32(changed, rpt.OFF_SIG_ALGO) != rpt.SIG_ALGO_ECDSA_P384_SHA384:
        return "unsupported_signature_algorithm"
    signing_key = _u32(changed, rpt.OFF_KEY_INFO) >> 2 & 7
    if signing_key != 0:
        return vlek if signing_key == 1 else "unsupported_signing_key"
    if version >= rpt.FIRST_VERSION_WITH_CPUID:
        generation = Generation.from_cpuid(changed[rpt.OFF_CPUID_FAM_ID], changed[rpt.OFF_CPUID_MOD_ID])
        if generation is None:
            return "unsupported_processor"
        if generation is not Generation.MILAN:
            return "chain_invalid"  # the test PKI holds Milan roots only
    tcb = [rpt.OFF_REPORTED_TCB + index for index in MILAN_TCB_BYTES]
    if any(changed[i] != original[i] for i in tcb):
        return "tcb_mismatch"
    chip_id = slice(rpt.OFF_CHIP_ID, rpt.OFF_CHIP_ID + 64)
    if changed[chip_id] != original[chip_id]:
        return "chip_id_mismatch"
    if offset < SNP_SIGNATURE_END:
        return "bad_signature"
    return ACCEPTED  # the reserved tail of the signature field is not signed
