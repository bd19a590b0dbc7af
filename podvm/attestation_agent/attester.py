"""What every evidence source offers the agent (upstream `attester::Attester`)."""

from __future__ import annotations

import base64
from typing import Any, Protocol

from podvm.attestation_agent.errors import AttesterError

REPORT_DATA_SIZE = 64


class Attester(Protocol):
    """One TEE's evidence source. `tee` is the `kbs_types::Tee` name the KBS dispatches on."""

    tee: str

    async def get_evidence(self, report_data: bytes) -> Any:
        """Evidence (a JSON value) whose report data field holds `report_data`."""

    async def bind_init_data(self, digest: bytes) -> bool:
        """Check `digest` against the TEE's init-data measurement (raising `InitDataError` on a
        mismatch) or extend it into one; False when the TEE has no such measurement."""


def fit_report_data(report_data: bytes, size: int = REPORT_DATA_SIZE) -> bytes:
    """Report data zero-padded to the hardware field; longer input is refused, not truncated."""
    if len(report_data) > size:
        raise AttesterError(f"report data is {len(report_data)} bytes, the TEE takes at most {size}")
    return report_data.ljust(size, b"\0")


class SampleAttester:
    """The no-hardware attester (upstream `sample`): `{"svn": "1", "report_data": base64}`. Only a
    KBS policy that explicitly allows the sample TEE releases anything to it."""

    tee = "sample"

    async def get_evidence(self, report_data: bytes) -> Any:
        return {"svn": "1", "report_data": base64.b64encode(report_data).decode("ascii")}

    async def bind_init_data(self, digest: bytes) -> bool:
        return False
