"""Verdict properties of the Azure vTPM verifiers (SNP and TDX): genuine evidence is accepted, and a
change to any byte the chain of trust covers is refused with the reason of the link it breaks -- the
TPM quote by the AK's signature, a PCR value by the quote's PCR digest, the HCL variable data by its
binding into the hardware report (or, where it changes the AK, by the quote signature), the SNP
report inside the HCL report by the SNP checks. HCL header fields that are not signed change nothing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.verifier import tdx_builder as tdx
from tests.verifier import vtpm_builder as b
from tests.verifier.verdicts import (
    ACCEPTED,
    MALFORMED,
    VERDICTS,
    flipped,
    masks,
    snp_expected_reason,
    verdict,
)
from verifier.az_snp_vtpm import AzSnpVtpmVerifier
from verifier.az_tdx_vtpm import AzTdxVtpmVerifier
from verifier.snp import SnpVerifier
from verifier.snp import report as rpt
from verifier.tdx import TdxVerifier
from verifier.vtpm.hcl import HW_REPORT_OFFSET, HW_REPORT_SLOT, RUNTIME_HEADER_OFFSET, VAR_DATA_OFFSET

SNP_CASE = b.make_az_snp_case()
SNP = AzSnpVtpmVerifier(SnpVerifier(anchors=SNP_CASE.snp.pki.anchors(), vcek_sources=[]))
TDX_CASE = b.make_az_tdx_case()
_TDX = TdxVerifier(source=None, root=TDX_CASE.pki.root, clock=lambda: tdx.NOW)
_TDX.add_collateral(tdx.collateral(TDX_CASE.pki))
TDX = AzTdxVtpmVerifier(_TDX)
BAD_QUOTE_SIGNATURE = "bad_quote_signature"


def snp_verdict(**parts: Any) -> str:
    return verdict(lambda: SNP.evaluate(SNP_CASE.evidence(**parts), SNP_CASE.nonce))


def tdx_verdict(**parts: Any) -> str:
    return verdict(lambda: TDX.evaluate(TDX_CASE.evidence(**parts), TDX_CASE.nonce))


VERDICT_OF: dict[str, Callable[..., str]] = {"snp": snp_verdict, "tdx": tdx_verdict}
QUOTES = {"snp": SNP_CASE.quote, "tdx": TDX_CASE.quote}
tees = st.sampled_from(sorted(VERDICT_OF))


@VERDICTS
@given(tees, st.sampled_from(["message", "signature"]), st.data(), masks)
def test_any_changed_byte_of_the_tpm_quote_fails_its_signature(
    tee: str, part: str, data: st.DataObject, mask: int
) -> None:
    assert VERDICT_OF[tee]() == ACCEPTED
    quote = QUOTES[tee]
    original = quote.message if part == "message" else quote.signature
    offset = data.draw(st.integers(min_value=0, max_value=len(original) - 1))
    value = flipped(original, offset, mask)
    changed = replace(quote, message=value) if part == "message" else replace(quote, signature=value)
    assert VERDICT_OF[tee](quote=changed) == BAD_QUOTE_SIGNATURE


@VERDICTS
@given(tees, st.integers(min_value=0, max_value=23), st.integers(min_value=0, max_value=31), masks)
def test_any_changed_pcr_value_fails_the_quoted_digest(tee: str, index: int, offset: int, mask: int) -> None:
    assert VERDICT_OF[tee]() == ACCEPTED
    quote = QUOTES[tee]
    pcrs = list(quote.pcrs)
    pcrs[index] = flipped(pcrs[index], offset, mask)
    assert VERDICT_OF[tee](quote=replace(quote, pcrs=tuple(pcrs))) == "pcr_digest_mismatch"


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise ValueError("duplicate key")
    return dict(pairs)


def _ak_numbers(var: bytes) -> tuple[str, int, int] | str:
    """(kty, n, e) of the first HCLAkPub JWK, or the reason the variable data yields no AK."""
    try:
        doc = json.loads(var.decode("utf-8"), object_pairs_hook=_unique_keys)
    except ValueError:
        return MALFORMED
    keys = doc.get("keys") if isinstance(doc, dict) else None
    ak = next((k for k in keys or [] if isinstance(k, dict) and k.get("kid") == "HCLAkPub"), None)
    if ak is None:
        return "ak_not_found"
    try:
        n, e = (int.from_bytes(base64.urlsafe_b64decode(ak[name] + "=="), "big") for name in ("n", "e"))
    except (KeyError, TypeError, ValueError):
        return MALFORMED
    return str(ak.get("kty")), n, e


def var_data_reasons(original: bytes, changed: bytes) -> set[str]:
    """Changed variable data no longer hashes to the hardware report's REPORT_DATA; but its AK is read
    (and used for the quote signature) before that binding is checked."""
    ak = _ak_numbers(changed)
    if isinstance(ak, str):
        return {ak}
    if ak == _ak_numbers(original):
        return {"var_data_mismatch"}
    return {BAD_QUOTE_SIGNATURE, MALFORMED}  # another AK, or a modulus/exponent that is no RSA key


def hcl_reasons(tee: str, original: bytes, changed: bytes, offset: int) -> set[str]:
    """What an HCL report changed at `offset` must be refused with, by the part of the layout it hits."""
    var_end = VAR_DATA_OFFSET + len(SNP_CASE.var if tee == "snp" else TDX_CASE.var)
    if offset < 4:
        return {MALFORMED}  # "HCLA"
    if offset < HW_REPORT_OFFSET:
        return {ACCEPTED}  # version, sizes, request type: unsigned and unused
    if offset < HW_REPORT_OFFSET + HW_REPORT_SLOT:
        if tee == "tdx":
            return {ACCEPTED}  # the HCL's own TDREPORT: the TD quote is what is verified
        at = offset - HW_REPORT_OFFSET
        if rpt.OFF_REPORT_DATA <= at < rpt.OFF_REPORT_DATA + 32:
            return {"var_data_mismatch"}
        report = slice(HW_REPORT_OFFSET, HW_REPORT_OFFSET + HW_REPORT_SLOT)
        return {snp_expected_reason(original[report], changed[report], at)}
    field = (offset - RUNTIME_HEADER_OFFSET) // 4
    if field in (0, 1):
        return {ACCEPTED}  # runtime data size and version: unused
    if field == 2:
        kind = int.from_bytes(changed[offset - offset % 4 : offset - offset % 4 + 4], "little")
        return {"hcl_report_type_mismatch"} if kind in (2, 4) else {MALFORMED}
    if field == 3:
        return {"unsupported_hash_type"}
    if field == 4:
        return {MALFORMED}  # the variable data's size: the JSON is cut or runs into the zero fill
    if offset < var_end:
        return var_data_reasons(original[VAR_DATA_OFFSET:var_end], changed[VAR_DATA_OFFSET:var_end])
    return {ACCEPTED}  # zero fill after the variable data


HCLS = {"snp": SNP_CASE.hcl, "tdx": TDX_CASE.hcl}
# where the bytes that matter lie: a uniform draw over the whole report would mostly hit one part
HCL_PARTS = [
    (0, HW_REPORT_OFFSET),
    (HW_REPORT_OFFSET, RUNTIME_HEADER_OFFSET),
    (RUNTIME_HEADER_OFFSET, VAR_DATA_OFFSET),
    (VAR_DATA_OFFSET, VAR_DATA_OFFSET + len(SNP_CASE.var)),
    (VAR_DATA_OFFSET + len(SNP_CASE.var), b.HCL_SIZE),
]


@VERDICTS
@given(tees, st.sampled_from(HCL_PARTS), st.data(), masks)
def test_any_changed_byte_of_the_hcl_report_is_refused_for_its_part(
    tee: str, part: tuple[int, int], data: st.DataObject, mask: int
) -> None:
    assert VERDICT_OF[tee]() == ACCEPTED
    offset = data.draw(st.integers(min_value=part[0], max_value=part[1] - 1))
    hcl = flipped(HCLS[tee], offset, mask)
    assert VERDICT_OF[tee](hcl=hcl) in hcl_reasons(tee, HCLS[tee], hcl, offset)
