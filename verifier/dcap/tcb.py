"""TCB status from Intel collateral, the part TDX and SGX share (Intel's quote verification library).

Inputs: the TCB info for the PCK's FMSPC, the PCK's SGX TCB (16 SVNs + PCE SVN) and the QE report
judged against the QE identity. The result is one of Intel's status names; whether a status is
acceptable is the verifier's policy, not decided here. Identity mismatches (QE, FMSPC) are errors:
they mean the collateral does not describe this platform at all.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from verifier.dcap.collateral import IsvLevel, QeIdentity, TcbInfo, TcbLevel
from verifier.dcap.pck import PckTcb, SgxExtension
from verifier.dcap.quote import EnclaveReport
from verifier.errors import VerificationError

UP_TO_DATE = "UpToDate"
SW_HARDENING = "SWHardeningNeeded"
CONFIG = "ConfigurationNeeded"
CONFIG_AND_SW = "ConfigurationAndSWHardeningNeeded"
OUT_OF_DATE = "OutOfDate"
OUT_OF_DATE_CONFIG = "OutOfDateConfigurationNeeded"
REVOKED = "Revoked"
RELAUNCH = "TDRelaunchAdvised"
RELAUNCH_CONFIG = "TDRelaunchAdvisedConfigurationNeeded"
NOT_SUPPORTED = "NotSupported"
UNRECOGNIZED = "Unrecognized"

LEVEL_STATUSES = frozenset(
    {UP_TO_DATE, SW_HARDENING, CONFIG, CONFIG_AND_SW, OUT_OF_DATE, OUT_OF_DATE_CONFIG, REVOKED}
)
# What upstream Trustee accepts from Intel's library; the rest (Revoked, NotSupported, ...) fail.
UPSTREAM_ACCEPTED = frozenset(LEVEL_STATUSES - {REVOKED} | {RELAUNCH, RELAUNCH_CONFIG})
CONFIG_NEEDED = frozenset({CONFIG, OUT_OF_DATE_CONFIG, CONFIG_AND_SW, RELAUNCH_CONFIG})


@dataclass(frozen=True, slots=True)
class TcbResult:
    status: str
    tcb_date: datetime
    advisory_ids: tuple[str, ...]
    qe_level: IsvLevel | None


def masked_equal(value: bytes, expected: bytes, mask: bytes) -> bool:
    return all((v & m) == (e & m) for v, e, m in zip(value, expected, mask, strict=True))


def check_platform(info: TcbInfo, ext: SgxExtension) -> None:
    """The TCB info must be the one for this platform (FMSPC and PCE-ID of the PCK)."""
    if info.fmspc != ext.fmspc or info.pce_id != ext.pce_id:
        raise VerificationError(
            "tcb_info_mismatch",
            f"TCB info is for FMSPC {info.fmspc.hex()} PCE-ID {info.pce_id.hex()}, "
            f"the PCK for FMSPC {ext.fmspc.hex()} PCE-ID {ext.pce_id.hex()}",
        )


def match_qe_identity(identity: QeIdentity, report: EnclaveReport) -> IsvLevel | None:
    """The QE identity level of the QE report (None: its ISV SVN is below every level)."""
    if not masked_equal(report.misc_select, identity.miscselect, identity.miscselect_mask):
        raise VerificationError("qe_identity_mismatch", "QE MISCSELECT does not match the QE identity")
    if not masked_equal(report.attributes, identity.attributes, identity.attributes_mask):
        raise VerificationError("qe_identity_mismatch", "QE attributes do not match the QE identity")
    if report.mr_signer != identity.mrsigner:
        raise VerificationError(
            "qe_identity_mismatch", f"QE MRSIGNER {report.mr_signer.hex()} is not Intel's"
        )
    if report.isv_prod_id != identity.isvprodid:
        raise VerificationError(
            "qe_identity_mismatch", f"QE ISVPRODID {report.isv_prod_id}, expected {identity.isvprodid}"
        )
    return next((lv for lv in identity.levels if report.isv_svn >= lv.isvsvn), None)


def reaches_sgx(level: TcbLevel, pck: PckTcb) -> bool:
    """The PCK's SGX TCB (component SVNs and PCE SVN) is at or above `level`'s."""
    return pck.pce_svn >= level.pce_svn and all(
        have >= need for have, need in zip(pck.sgx_svns, level.sgx_svns, strict=True)
    )


def converge(status: str, other: str | None) -> str:
    """Fold a module or QE status that is out of date or revoked into a TCB level status."""
    if other == OUT_OF_DATE:
        if status in (UP_TO_DATE, SW_HARDENING):
            return OUT_OF_DATE
        if status in (CONFIG, CONFIG_AND_SW):
            return OUT_OF_DATE_CONFIG
    if other == REVOKED:
        return REVOKED
    return status


def dated(info: TcbInfo, levels: Iterable[TcbLevel | IsvLevel | None]) -> tuple[datetime, tuple[str, ...]]:
    """TCB date (the earliest of the matched levels') and advisories (all of theirs, in order)."""
    matched = [lv for lv in levels if lv is not None]
    tcb_date = min((lv.date for lv in matched), default=info.issue_date)
    return tcb_date, tuple(dict.fromkeys(a for lv in matched for a in lv.advisory_ids))


def evaluate_sgx_tcb(info: TcbInfo, ext: SgxExtension, qe_level: IsvLevel | None) -> TcbResult:
    """Intel's TCB status for an SGX enclave's platform and QE: the first TCB level the PCK reaches,
    converged with the QE identity's level."""
    level = next((lv for lv in info.levels if reaches_sgx(lv, ext.tcb)), None)
    tcb_date, advisories = dated(info, (level, qe_level))

    def result(status: str) -> TcbResult:
        return TcbResult(status, tcb_date, advisories, qe_level)

    if level is None:
        return result(NOT_SUPPORTED)
    if level.status not in LEVEL_STATUSES:
        return result(UNRECOGNIZED)
    if level.status == REVOKED:
        return result(REVOKED)
    if qe_level is None:
        return result(NOT_SUPPORTED)
    return result(converge(level.status, qe_level.status))
