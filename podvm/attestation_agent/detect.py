"""Which TEE this guest runs in, in upstream's order (`attester::detect_tee_type`): TDX, Azure TDX
vTPM, Azure SNP vTPM, SNP; the sample attester when none is found. Every path is configurable so that
tests can point detection at a fake tree."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from podvm.attestation_agent.attester import Attester, SampleAttester
from podvm.attestation_agent.azure import (
    IMDS_URL,
    REPORT_TYPE_SNP,
    AzSnpVtpmAttester,
    AzTdxVtpmAttester,
    AzureEvidenceError,
    AzureImds,
    Tpm2ToolsVtpm,
    Vtpm,
    parse_hcl_report,
)
from podvm.attestation_agent.sev_guest import SEV_GUEST_DEVICE
from podvm.attestation_agent.snp import SnpAttester, snp_source
from podvm.attestation_agent.tdx import CCEL_PATH, MEASUREMENTS_DIR, TdxAttester
from podvm.attestation_agent.tsm import PROVIDER_TDX, TSM_REPORT_ROOT, ReportEntries, TsmReportClient

log = logging.getLogger(__name__)

AZURE_SYS_VENDOR = "Microsoft Corporation"


@dataclass(frozen=True)
class Platform:
    """Where the TEE interfaces live (the real system by default)."""

    tsm_root: Path = TSM_REPORT_ROOT
    tsm_entries: ReportEntries | None = None
    sev_guest_device: Path = SEV_GUEST_DEVICE
    tpm_device: Path = Path("/dev/tpmrm0")
    dmi_sys_vendor: Path = Path("/sys/class/dmi/id/sys_vendor")
    ccel: Path = CCEL_PATH
    tdx_measurements: Path = MEASUREMENTS_DIR
    imds_url: str = IMDS_URL
    vtpm: Vtpm = field(default_factory=Tpm2ToolsVtpm)


def detect_attester(platform: Platform | None = None) -> Attester:
    p = platform or Platform()
    tdx = TsmReportClient(PROVIDER_TDX, p.tsm_root, p.tsm_entries)
    if tdx.available():
        return TdxAttester(tdx, p.ccel, p.tdx_measurements)
    azure = _azure_attester(p)
    if azure is not None:
        return azure
    source = snp_source(p.tsm_root, p.sev_guest_device, p.tsm_entries)
    if source is not None:
        return SnpAttester(source)
    log.warning("no TEE detected: using the sample attester, which a KBS only trusts if told to")
    return SampleAttester()


def _azure_attester(p: Platform) -> Attester | None:
    try:
        vendor = p.dmi_sys_vendor.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None
    if vendor != AZURE_SYS_VENDOR or not p.tpm_device.exists():
        return None
    try:
        hcl = parse_hcl_report(p.vtpm.hcl_report(None))
    except AzureEvidenceError as exc:
        log.info("Azure VM without a readable HCL report (%s): not a confidential VM", exc)
        return None
    imds = AzureImds(p.imds_url)
    if hcl.report_type == REPORT_TYPE_SNP:
        return AzSnpVtpmAttester(p.vtpm, imds)
    return AzTdxVtpmAttester(p.vtpm, imds)
