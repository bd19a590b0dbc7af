"""The Intel TDX attester: quotes from configfs-tsm, the CC event log from ACPI (upstream
`attester::tdx`); init data is checked against MR_CONFIG_ID, which the host set at launch."""

from __future__ import annotations

import asyncio
import base64
import struct
from pathlib import Path
from typing import Any

from podvm.attestation_agent.attester import fit_report_data
from podvm.attestation_agent.errors import AttesterError, InitDataError
from podvm.attestation_agent.tsm import TsmReportClient

CCEL_PATH = Path("/sys/firmware/acpi/tables/data/CCEL")
MEASUREMENTS_DIR = Path("/sys/devices/virtual/misc/tdx_guest/measurements")
MR_CONFIG_ID_SIZE = 48
MAX_CCEL_BYTES = 16 * 1024 * 1024

# TD quote v4: 48-byte header, then the TD report body; v5 adds `u16 type, u32 size` before the body.
_HEADER_SIZE = 48
_BODY_MR_CONFIG_ID = 184
_BODY_REPORT_DATA = 520
_BODY_V4_SIZE = 584
_EV_NO_ACTION = 0x3
_DIGEST_SIZES = {0x4: 20, 0xB: 32, 0xC: 48, 0xD: 64, 0x12: 32}


class TdxQuoteError(AttesterError):
    """A TD quote or CC event log that cannot be read."""


def quote_fields(quote: bytes) -> tuple[bytes, bytes]:
    """(MR_CONFIG_ID, REPORT_DATA) of a TD quote v4 or v5."""
    if len(quote) < _HEADER_SIZE + 6:
        raise TdxQuoteError(f"TD quote of {len(quote)} bytes is too short")
    version = int.from_bytes(quote[0:2], "little")
    if version == 4:
        body = _HEADER_SIZE
    elif version == 5:
        body = _HEADER_SIZE + 6
    else:
        raise TdxQuoteError(f"TD quote version {version} is not 4 or 5")
    if len(quote) < body + _BODY_V4_SIZE:
        raise TdxQuoteError(f"TD quote of {len(quote)} bytes is too short for its body")
    config = quote[body + _BODY_MR_CONFIG_ID : body + _BODY_MR_CONFIG_ID + MR_CONFIG_ID_SIZE]
    return config, quote[body + _BODY_REPORT_DATA : body + _BODY_REPORT_DATA + 64]


def trim_ccel(ccel: bytes) -> bytes:
    """The CCEL table cut after its last event (the ACPI table is padded to its reserved size).

    Layout (TCG PC Client, crypto-agile): a first event in the legacy format (`u32 pcr, u32 type,
    20-byte digest, u32 size, data`), then events `u32 mr, u32 type, u32 digest count, (u16 alg,
    digest)*, u32 size, data`; the log ends at an all-ones or all-zero word.
    """
    index = 4
    event_type = _u32(ccel, index)
    index += 4 + 20
    if event_type == _EV_NO_ACTION:
        index += 4 + _u32(ccel, index)
    while True:
        if index + 8 > len(ccel):
            raise TdxQuoteError("CC event log has no end marker")
        marker = ccel[index : index + 8]
        if marker in (b"\xff" * 8, bytes(8)):
            return ccel[:index]
        index += 8
        count = _u32(ccel, index)
        index += 4
        for _ in range(count):
            algorithm = int.from_bytes(_slice(ccel, index, 2), "little")
            size = _DIGEST_SIZES.get(algorithm)
            if size is None:
                raise TdxQuoteError(f"CC event log digest algorithm 0x{algorithm:x} is unknown")
            index += 2 + size
        index += 4 + _u32(ccel, index)


class TdxAttester:
    tee = "tdx"

    def __init__(
        self, tsm: TsmReportClient, ccel: Path = CCEL_PATH, measurements: Path = MEASUREMENTS_DIR
    ) -> None:
        self._tsm = tsm
        self._ccel = ccel
        self._measurements = measurements

    async def get_evidence(self, report_data: bytes) -> Any:
        data = fit_report_data(report_data)
        quote = (await asyncio.to_thread(self._tsm.get_report, data)).outblob
        if quote_fields(quote)[1] != data:
            raise AttesterError("the TD quote does not carry the requested report data")
        eventlog = await asyncio.to_thread(self._read_ccel)
        return {
            "cc_eventlog": base64.b64encode(eventlog).decode("ascii") if eventlog else None,
            "quote": base64.b64encode(quote).decode("ascii"),
        }

    async def bind_init_data(self, digest: bytes) -> bool:
        mr_config_id = await asyncio.to_thread(self._mr_config_id)
        if mr_config_id != digest[:MR_CONFIG_ID_SIZE].ljust(MR_CONFIG_ID_SIZE, b"\0"):
            raise InitDataError("the TD's MR_CONFIG_ID does not match the init-data digest")
        return True

    def _mr_config_id(self) -> bytes:
        """From sysfs (Linux >= 6.16) when present, else from a quote."""
        try:
            return (self._measurements / "mrconfigid").read_bytes()[:MR_CONFIG_ID_SIZE]
        except FileNotFoundError:
            return quote_fields(self._tsm.get_report(bytes(64)).outblob)[0]
        except OSError as exc:
            raise AttesterError(f"cannot read MR_CONFIG_ID: {exc.strerror or exc}") from None

    def _read_ccel(self) -> bytes | None:
        try:
            with self._ccel.open("rb") as f:
                raw = f.read(MAX_CCEL_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AttesterError(f"cannot read the CC event log: {exc.strerror or exc}") from None
        if len(raw) > MAX_CCEL_BYTES:
            raise TdxQuoteError(f"CC event log is larger than {MAX_CCEL_BYTES} bytes")
        return trim_ccel(raw)


def _slice(data: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(data):
        raise TdxQuoteError("CC event log ends inside an event")
    return data[offset : offset + size]


def _u32(data: bytes, offset: int) -> int:
    return int(struct.unpack("<I", _slice(data, offset, 4))[0])
