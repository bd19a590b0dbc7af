"""TCB status of a TDX platform from its collateral, following Intel's quote verification library.

On top of the SGX part (`verifier.dcap.tcb`): the quote's TEE TCB SVNs against each level's TDX
components, the TDX module identity, and TDX 1.5's relaunch advice. A TDX module mismatch is an
error: the collateral does not describe this platform at all.
"""

from __future__ import annotations

from verifier.dcap.collateral import IsvLevel, TcbInfo, TcbLevel, TdxModule
from verifier.dcap.pck import PckTcb, SgxExtension
from verifier.dcap.tcb import (
    CONFIG,
    CONFIG_AND_SW,
    CONFIG_NEEDED,
    LEVEL_STATUSES,
    NOT_SUPPORTED,
    OUT_OF_DATE,
    OUT_OF_DATE_CONFIG,
    RELAUNCH,
    RELAUNCH_CONFIG,
    REVOKED,
    SW_HARDENING,
    UNRECOGNIZED,
    UP_TO_DATE,
    TcbResult,
    converge,
    dated,
    masked_equal,
    reaches_sgx,
)
from verifier.errors import VerificationError
from verifier.tdx.quote import BODY_TYPE_TDX15, TdReport


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
    if module is None:
        raise VerificationError("tdx_module_mismatch", "TCB info has no TDX module")
    if body.mrsigner_seam != module.mrsigner:
        raise VerificationError("tdx_module_mismatch", "MRSIGNER_SEAM is not the TDX module signer")
    if not masked_equal(body.seam_attributes, module.attributes, module.attributes_mask):
        raise VerificationError("tdx_module_mismatch", "SEAM attributes do not match the TDX module identity")
    return module if version > 0 else None


def _match_levels(
    levels: tuple[TcbLevel, ...], pck: PckTcb, tee_tcb_svn: bytes
) -> tuple[TcbLevel | None, TcbLevel | None]:
    """First level the PCK's SGX TCB reaches, and first level both SGX and TDX TCB reach."""
    start = 2 if tee_tcb_svn[1] > 0 else 0  # module version byte: judged by the module identity
    sgx_level = None
    for level in levels:
        if not reaches_sgx(level, pck):
            continue
        sgx_level = sgx_level or level
        if all(tee_tcb_svn[i] >= level.tdx_svns[i] for i in range(start, 16)):
            return sgx_level, level
    return sgx_level, None


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
    return RELAUNCH_CONFIG if sgx_status in CONFIG_NEEDED or tdx_status in CONFIG_NEEDED else RELAUNCH


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
    tcb_date, advisories = dated(info, (tdx_level, module_level, qe_level))

    def result(status: str) -> TcbResult:
        return TcbResult(status, tcb_date, advisories, qe_level)

    if sgx_level is None or tdx_level is None or (module is not None and module_level is None):
        return result(NOT_SUPPORTED)
    module_status = module_level.status if module_level is not None else UP_TO_DATE
    if tdx_level.status not in LEVEL_STATUSES:
        return result(UNRECOGNIZED)
    status = converge(tdx_level.status, module_status)
    if status == REVOKED:
        return result(REVOKED)
    if body_type == BODY_TYPE_TDX15 and body.tee_tcb_svn2 is not None:
        status = _relaunch(info, body.tee_tcb_svn2, sgx_level.status, status, module_status, qe_status)
    if qe_status == NOT_SUPPORTED:
        return result(NOT_SUPPORTED)
    return result(converge(status, qe_status))
