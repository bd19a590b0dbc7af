"""Stand-ins for kernel and device interfaces the attesters use (not for our own code): a configfs-tsm
tree whose entries populate themselves on creation like configfs does, and an Azure vTPM."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from podvm.attestation_agent.azure import TpmQuote

REPORT_SIZE = 1184


def snp_report(
    report_data: bytes = bytes(64), host_data: bytes = bytes(32), version: int = 3, family: int = 0x19
) -> bytes:
    """A synthetic SNP report (unsigned): enough for evidence shaping and binding checks."""
    raw = bytearray(REPORT_SIZE)
    raw[0:4] = version.to_bytes(4, "little")
    raw[0x34:0x38] = (1).to_bytes(4, "little")
    raw[0x50:0x90] = report_data.ljust(64, b"\0")
    raw[0xC0:0xE0] = host_data.ljust(32, b"\0")
    raw[0x180:0x188] = bytes([3, 0, 0, 0, 0, 0, 8, 115])
    raw[0x188] = family
    raw[0x1E8:0x1EB] = bytes([4, 52, 1])
    return bytes(raw)


def td_quote(report_data: bytes = bytes(64), mr_config_id: bytes = bytes(48), version: int = 4) -> bytes:
    """A synthetic TD quote: header, TD report body and an empty signature section."""
    body_offset = 48 if version == 4 else 54
    raw = bytearray(body_offset + 584 + 4)
    raw[0:2] = version.to_bytes(2, "little")
    raw[body_offset + 184 : body_offset + 232] = mr_config_id.ljust(48, b"\0")
    raw[body_offset + 520 : body_offset + 584] = report_data.ljust(64, b"\0")
    return bytes(raw)


@dataclass
class FakeConfigfs:
    """configfs-tsm entries: created with `provider`, `generation` and the blobs `make_outblob` gives.

    Real configfs computes outblob when it is read, from the inblob written; a file tree cannot, so
    the test says up front what the "hardware" answers, and every inblob written is recorded."""

    provider: str
    make_outblob: Callable[[], bytes]
    auxblob: bytes | None = None
    generation: int = 1
    inblobs: list[bytes] = field(default_factory=list)
    privlevels: list[bytes] = field(default_factory=list)
    created: list[Path] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)

    def create(self, path: Path) -> None:
        path.mkdir()
        self.created.append(path)
        (path / "provider").write_text(f"{self.provider}\n")
        (path / "generation").write_text(f"{self.generation}\n")
        (path / "outblob").write_bytes(self.make_outblob())
        if self.auxblob is not None:
            (path / "auxblob").write_bytes(self.auxblob)

    def remove(self, path: Path) -> None:
        if (path / "inblob").exists():
            self.inblobs.append((path / "inblob").read_bytes())
        if (path / "privlevel").exists():
            self.privlevels.append((path / "privlevel").read_bytes())
        shutil.rmtree(path)
        self.removed.append(path)


@dataclass
class FakeVtpm:
    """An Azure vTPM that answers with recorded HCL reports and quotes."""

    hcl: bytes
    quote_result: TpmQuote
    writes: list[bytes | None] = field(default_factory=list)
    extended: list[tuple[int, bytes]] = field(default_factory=list)
    nonces: list[bytes] = field(default_factory=list)

    def hcl_report(self, report_data: bytes | None) -> bytes:
        self.writes.append(report_data)
        return self.hcl

    def quote(self, nonce: bytes) -> TpmQuote:
        self.nonces.append(nonce)
        return self.quote_result

    def extend_pcr(self, index: int, sha256_digest: bytes) -> None:
        self.extended.append((index, sha256_digest))
