"""The SEV-SNP attester: reports from configfs-tsm (with the host's certificate table, `auxblob`), or
from `/dev/sev-guest` on older kernels; init data is checked against the report's HOST_DATA, which
the host set at launch to the init-data digest (upstream `attester::snp`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Protocol

from podvm.attestation_agent import sev_guest
from podvm.attestation_agent.attester import fit_report_data
from podvm.attestation_agent.errors import AttesterError, InitDataError
from podvm.attestation_agent.snp_report import (
    HOST_DATA_SIZE,
    host_data_of,
    report_data_of,
    snp_evidence,
)
from podvm.attestation_agent.tsm import PROVIDER_SEV, ReportEntries, TsmReportClient


class SnpReportSource(Protocol):
    def report(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        """(raw report, certificate table or None) for 64 bytes of report data."""


class TsmSnpSource:
    def __init__(self, client: TsmReportClient, vmpl: int = 0) -> None:
        self._client = client
        self._vmpl = vmpl

    def report(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        result = self._client.get_report(report_data, privlevel=self._vmpl, want_auxblob=True)
        return result.outblob, result.auxblob


class SevGuestSource:
    def __init__(self, device: Path = sev_guest.SEV_GUEST_DEVICE, vmpl: int = 0) -> None:
        self._device = device
        self._vmpl = vmpl

    def report(self, report_data: bytes) -> tuple[bytes, bytes | None]:
        return sev_guest.get_report(report_data, self._vmpl, self._device), None


def snp_source(tsm_root: Path, device: Path, entries: ReportEntries | None = None) -> SnpReportSource | None:
    """configfs-tsm when the kernel offers it for SEV, else the ioctl device, else None."""
    client = TsmReportClient(PROVIDER_SEV, tsm_root, entries)
    if client.available():
        return TsmSnpSource(client)
    if device.exists():
        return SevGuestSource(device)
    return None


class SnpAttester:
    tee = "snp"

    def __init__(self, source: SnpReportSource) -> None:
        self._source = source

    async def get_evidence(self, report_data: bytes) -> Any:
        data = fit_report_data(report_data)
        raw, cert_table = await asyncio.to_thread(self._source.report, data)
        if report_data_of(raw) != data:
            raise AttesterError("the SNP report does not carry the requested report data")
        return snp_evidence(raw, cert_table)

    async def bind_init_data(self, digest: bytes) -> bool:
        raw, _ = await asyncio.to_thread(self._source.report, bytes(64))
        expected = digest[:HOST_DATA_SIZE].ljust(HOST_DATA_SIZE, b"\0")
        if host_data_of(raw) != expected:
            raise InitDataError("the SNP report's HOST_DATA does not match the init-data digest")
        return True
