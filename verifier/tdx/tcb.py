"""TCB status of a TDX platform from its collateral, following Intel's quote verification library.

Inputs: the TCB info for the PCK's FMSPC, the PCK's SGX TCB (16 SVNs + PCE SVN), the quote's TEE TCB
SVNs, and the QE report judged against the TD QE identity. The result is one of Intel's status
names; whether a status is acceptable is the verifier's policy, not decided here. Identity
mismatches (QE, TDX module, FMSPC) are errors: they mean the collateral does not describe this
platform at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from verifier.dcap.collateral import IsvLevel, QeIdentity, TcbInfo, TcbLevel, TdxModule
from verifier.dcap.pck import PckTcb, SgxExtension
from verifier.errors import VerificationError
from verifier.tdx.quote import BODY_TYPE_TDX15, EnclaveReport, TdReport

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
_CONFIG_NEEDED = frozenset({CONFIG, OUT_OF_DATE_CONFIG, CONFIG_AND_SW, RELAUNCH_CONFIG})


@dataclass(frozen=True, slots=True)
class TcbResult:
    status: str
    tcb_date: datetime
    advisory_ids: tuple[str, ...]
    qe_level: IsvLevel | None


def _masked_equal(value: bytes, expected: bytes, mask: bytes) -> bool:
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
    if not _masked_equal(report.misc_select, identity.miscselect, identity.miscselect_mask):
        raise VerificationError("qe_identity_mismatch", "QE MISCSELECT does not match the QE identity")
    if not _masked_equal(report.attributes, identity.attributes, identity.attributes_mask):
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


def _find_module(info: TcbInfo, version: int) -> TdxModule:
    wanted = f"TDX_{version:02X}"
    for module in info.module_identities:
        if module.id.upper() == wanted:
            return module
    raise VerificationError("tdx_module_mismatch", f"TCB info has no TDX module identity {wanted}")


def check_tdx_module(info: TcbInfo, body: TdReport) -> TdxModule | None:
    """The TDX module identity of the quote (None for version 0 modules, judged by `tdxModule`)."""
    version = body.tee_tcb_svn[1]
    module = _find_module(info, version) if version > 0 else info.tdx_module
    if body.mrsigner_seam != module.mrsigner:
        raise VerificationError("tdx_module_mismatch", "MRSIGNER_SEAM is not the TDX module signer")
    if not _masked_equal(body.seam_attributes, module.attributes, module.attributes_mask):
        raise VerificationError("tdx_module_mismatch", "SEAM attributes do not match the TDX module identity")
    return module if version > 0 else None


def _match_levels(
    levels: tuple[TcbLevel, ...], pck: PckTcb, tee_tcb_svn: bytes
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """First level the PCK's SGX TCB reaches, and first level both SGX and TDX TCB reach."""
    start = 2 if tee_tcb_svn[1] > 0 else 0  # module version byte: judged by the module identity
    sgx_level = None
    for level in levels:
        if pck.pce_svn < level.pce_svn or any(
            have < need for have, need in zip(pck.sgx_svns, level.sgx_svns, strict=True)
        ):
            continue
        sgx_level = sgx_level or level
        if all(tee_tcb_svn[i] >= level.tdx_svns[i] for i in range(start, 16)):
            return sgx_level, level
    return sgx_level, None


def _converge(status: str, other: str | None) -> str:
    """Fold a module or QE status that is out of date or revoked into a TCB level status."""
    if other == OUT_OF_DATE:
        if status in (UP_TO_DATE, SW_HARDENING):
            return OUT_OF_DATE
        if status in (CONFIG, CONFIG_AND_SW):
            return OUT_OF_DATE_CONFIG
    if other == REVOKED:
        return REVOKED
    return status


def _relaunch(
    info: TcbInfo, svn2: bytes, sgx_status: str, tdx_status: str, module_status: str, qe_status: str
) -> str:
    """TDX 1.5: a TD that would be up to date after a relaunch on the updated module is told so."""
    if (
        qe_status in (OUT_OF_DATE, REVOKED, NOT_SUPPORTED)
        or sgx_status not in (UP_TO_DATE, SW_HARDENING, CONFIG, CONFIG_AND_SW)
        or tdx_status not in (OUT_OF_DATE, OUT_OF_DATE_CONFIG)
        or module_status != OUT_OF_DATE
    ):
        return tdx_status
    latest = info.levels[0]
    if svn2[1] == 0:
        module_current = svn2[0] >= latest.tdx_svns[0]
    else:
        levels = _find_module(info, svn2[1]).levels
        if not levels:
            return NOT_SUPPORTED
        module_current = svn2[0] >= levels[0].isvsvn
    if not (module_current and svn2[2] >= latest.tdx_svns[2]):
        return tdx_status
    return RELAUNCH_CONFIG if sgx_status in _CONFIG_NEEDED or tdx_status in _CONFIG_NEEDED else RELAUNCH


def evaluate_tcb(
    info: TcbInfo, ext: SgxExtension, body: TdReport, body_type: int, qe_level: IsvLevel | None
) -> TcbResult:
    """Intel's TCB status for this platform, TDX module and QE."""
    qe_status = qe_level.status if qe_level is not None else NOT_SUPPORTED
    module = check_tdx_module(info, body)
    sgx_level, tdx_level = _match_levels(info.levels, ext.tcb, body.tee_tcb_svn)
    module_level = None
    if module is not None:
        module_level = next((lv for lv in module.levels if body.tee_tcb_svn[0] >= lv.isvsvn), None)
    dated = [lv for lv in (tdx_level, module_level, qe_level) if lv is not None]
    tcb_date = min((lv.date for lv in dated), default=info.issue_date)
    advisories = tuple(dict.fromkeys(a for lv in dated for a in lv.advisory_ids))

    def result(status: str) -> TcbResult:
        return TcbResult(status, tcb_date, advisories, qe_level)

    if sgx_level is None or tdx_level is None or (module is not None and module_level is None):
        return result(NOT_SUPPORTED)
    module_status = module_level.status if module_level is not None else UP_TO_DATE
    if tdx_level.status not in LEVEL_STATUSES:
        return result(UNRECOGNIZED)
    status = _converge(tdx_level.status, module_status)
    if status == REVOKED:
        return result(REVOKED)
    if body_type == BODY_TYPE_TDX15 and body.tee_tcb_svn2 is not None:
        status = _relaunch(info, body.tee_tcb_svn2, sgx_level.status, status, module_status, qe_status)
    if qe_status == NOT_SUPPORTED:
        return result(NOT_SUPPORTED)
    return result(_converge(status, qe_status))
