"""Verdict properties of the SNP verifier: the genuine report is accepted, and a change to any signed
byte -- in the binary report or in upstream's JSON evidence -- is refused with the reason its field
calls for (a header field by its own check, the key-bound fields by the key binding, everything else
by the signature). Bytes the firmware leaves unsigned (the signature's reserved tail) change nothing.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.verifier import snp_builder as b
from tests.verifier.verdicts import (
    ACCEPTED,
    MILAN_TCB_BYTES,
    SNP_SIGNATURE_END,
    VERDICTS,
    flipped,
    masks,
    snp_expected_reason,
    verdict,
)
from verifier.snp import SnpVerifier
from verifier.snp import report as rpt
from verifier.snp.report import REPORT_SIZE, parse_report

CASE = b.make_case()  # a Milan v3 report signed by its VCEK
# and reports of the versions before CPUID (2) and with mitigation vectors (5), by their own VCEKs
CASES = [CASE, *(b.make_case(b.ReportSpec(version=v), pki=CASE.pki) for v in (2, 5))]
VERIFIER = SnpVerifier(anchors=CASE.pki.anchors(), vcek_sources=[])
EVIDENCE = json.loads(CASE.evidence())


def report_verdict(case: b.SnpCase, raw: bytes) -> str:
    """The verdict of `verify_report` (the path Azure's vTPM evidence takes) on a binary report."""
    return verdict(lambda: VERIFIER.verify_report(parse_report(raw), case.vek_der))


def evidence_verdict(doc: dict[str, Any]) -> str:
    return verdict(lambda: VERIFIER.evaluate(json.dumps(doc).encode(), CASE.spec.report_data))


@VERDICTS
@given(st.sampled_from(CASES), st.integers(min_value=0, max_value=SNP_SIGNATURE_END - 1), masks)
def test_any_changed_byte_of_the_signed_report_is_refused_for_its_field(
    case: b.SnpCase, offset: int, mask: int
) -> None:
    assert report_verdict(case, case.report) == ACCEPTED
    raw = flipped(case.report, offset, mask)
    expected = snp_expected_reason(case.report, raw, offset)
    assert expected != ACCEPTED
    assert report_verdict(case, raw) == expected


@VERDICTS
@given(st.sampled_from(CASES), st.integers(min_value=SNP_SIGNATURE_END, max_value=REPORT_SIZE - 1), masks)
def test_the_unsigned_reserved_tail_changes_nothing(case: b.SnpCase, offset: int, mask: int) -> None:
    assert report_verdict(case, flipped(case.report, offset, mask)) == ACCEPTED


def _json_fields() -> list[tuple[tuple[str, ...], int, int]]:
    """(path in the JSON report, report offset, size) of every signed integer and byte field."""
    fields: list[tuple[tuple[str, ...], int, int]] = [
        (("version",), rpt.OFF_VERSION, 4),
        (("guest_svn",), rpt.OFF_GUEST_SVN, 4),
        (("policy",), rpt.OFF_POLICY, 8),
        (("vmpl",), rpt.OFF_VMPL, 4),
        (("sig_algo",), rpt.OFF_SIG_ALGO, 4),
        (("plat_info",), rpt.OFF_PLAT_INFO, 8),
        (("key_info",), rpt.OFF_KEY_INFO, 4),
        (("cpuid_fam_id",), rpt.OFF_CPUID_FAM_ID, 1),
        (("cpuid_mod_id",), rpt.OFF_CPUID_MOD_ID, 1),
        (("cpuid_step",), rpt.OFF_CPUID_STEP, 1),
        (("family_id",), rpt.OFF_FAMILY_ID, 16),
        (("image_id",), rpt.OFF_IMAGE_ID, 16),
        (("report_data",), rpt.OFF_REPORT_DATA, 64),
        (("measurement",), rpt.OFF_MEASUREMENT, 48),
        (("host_data",), rpt.OFF_HOST_DATA, 32),
        (("id_key_digest",), rpt.OFF_ID_KEY_DIGEST, 48),
        (("author_key_digest",), rpt.OFF_AUTHOR_KEY_DIGEST, 48),
        (("report_id",), rpt.OFF_REPORT_ID, 32),
        (("report_id_ma",), rpt.OFF_REPORT_ID_MA, 32),
        (("chip_id",), rpt.OFF_CHIP_ID, 64),
        (("signature", "r"), rpt.OFF_SIGNATURE_R, rpt.SIGNATURE_COMPONENT_SIZE),
        (("signature", "s"), rpt.OFF_SIGNATURE_S, rpt.SIGNATURE_COMPONENT_SIZE),
    ]
    for name, offset in (
        ("current_tcb", rpt.OFF_CURRENT_TCB),
        ("reported_tcb", rpt.OFF_REPORTED_TCB),
        ("committed_tcb", rpt.OFF_COMMITTED_TCB),
        ("launch_tcb", rpt.OFF_LAUNCH_TCB),
    ):
        for component, index in zip(("bootloader", "tee", "snp", "microcode"), MILAN_TCB_BYTES, strict=True):
            fields.append(((name, component), offset + index, 1))
    for name, offset in (("current", rpt.OFF_CURRENT_VERSION), ("committed", rpt.OFF_COMMITTED_VERSION)):
        for index, component in enumerate(("build", "minor", "major")):
            fields.append(((name, component), offset + index, 1))
    return fields


JSON_FIELDS = _json_fields()


def _json_flip(report: dict[str, Any], path: tuple[str, ...], index: int, mask: int) -> dict[str, Any]:
    """A copy of the JSON report with byte `index` of the field at `path` xored with `mask`."""
    out = json.loads(json.dumps(report))
    parent = out
    for step in path[:-1]:
        parent = parent[step]
    value = parent[path[-1]]
    if isinstance(value, list):
        value[index] ^= mask
    else:
        parent[path[-1]] = value ^ (mask << (8 * index))
    return dict(out)


@VERDICTS
@given(st.sampled_from(JSON_FIELDS), st.data(), masks)
def test_any_changed_signed_byte_of_json_evidence_is_refused_for_its_field(
    field: tuple[tuple[str, ...], int, int], data: st.DataObject, mask: int
) -> None:
    assert evidence_verdict(EVIDENCE) == ACCEPTED
    path, offset, size = field
    index = data.draw(st.integers(min_value=0, max_value=size - 1))
    doc = {**EVIDENCE, "attestation_report": _json_flip(EVIDENCE["attestation_report"], path, index, mask)}
    raw = flipped(CASE.report, offset + index, mask)
    expected = snp_expected_reason(CASE.report, raw, offset + index, vlek="vcek_unavailable")
    assert evidence_verdict(doc) == expected
