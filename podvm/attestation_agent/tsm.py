"""configfs-tsm attestation reports (`/sys/kernel/config/tsm/report`), the kernel's one interface for
SNP, TDX and CCA quotes.

A request is a directory: creating it (mkdir in configfs) makes the kernel populate the attributes;
`provider` names the TEE driver, `inblob` takes the report data, reading `outblob` produces the report
(raw SNP report, TDX quote), `auxblob` carries the SNP certificate table, and `generation` counts
inblob writes so a reader can tell that nobody else wrote into the same directory meanwhile. The
directory is removed (rmdir) afterwards.

Creating and removing entries goes through `ReportEntries` so that tests can stand in a fake tree for
configfs (a plain directory cannot populate itself); everything else is ordinary file I/O below a
configurable root.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from podvm.attestation_agent.errors import AttesterError

log = logging.getLogger(__name__)

TSM_REPORT_ROOT = Path("/sys/kernel/config/tsm/report")
PROVIDER_SEV = "sev_guest"
PROVIDER_TDX = "tdx_guest"
PROVIDER_CCA = "arm_cca_guest"
MAX_INBLOB = 64
MAX_BLOB_BYTES = 1024 * 1024


class TsmReportError(AttesterError):
    """configfs-tsm is absent, belongs to another TEE, or answered with something unusable."""


class ReportEntries(Protocol):
    """Creates and removes report directories (configfs mkdir/rmdir)."""

    def create(self, path: Path) -> None: ...

    def remove(self, path: Path) -> None: ...


class ConfigfsEntries:
    """The real thing: in configfs, mkdir populates the entry and rmdir drops it with its attributes."""

    def create(self, path: Path) -> None:
        path.mkdir(mode=0o700)

    def remove(self, path: Path) -> None:
        path.rmdir()


@dataclass(frozen=True, slots=True)
class TsmReport:
    outblob: bytes
    auxblob: bytes | None


class TsmReportClient:
    """Report requests under `root` for one provider (`sev_guest`, `tdx_guest`, ...)."""

    def __init__(
        self, provider: str, root: Path = TSM_REPORT_ROOT, entries: ReportEntries | None = None
    ) -> None:
        self.provider = provider
        self.root = root
        self._entries = entries if entries is not None else ConfigfsEntries()

    def available(self) -> bool:
        """Whether configfs-tsm exists and its provider is ours (upstream's platform detection)."""
        try:
            with self._entry():
                return True
        except TsmReportError as exc:
            log.debug("configfs-tsm %s not usable: %s", self.provider, exc)
            return False

    def get_report(
        self, inblob: bytes, *, privlevel: int | None = None, want_auxblob: bool = False
    ) -> TsmReport:
        """One report for `inblob` (at most 64 bytes; callers pad to the TEE's field)."""
        if not 0 < len(inblob) <= MAX_INBLOB:
            raise TsmReportError(f"inblob must be 1..{MAX_INBLOB} bytes, got {len(inblob)}")
        with self._entry() as entry:
            if privlevel is not None:
                _write(entry / "privlevel", str(privlevel).encode("ascii"))
            _write(entry / "inblob", inblob)
            outblob = _read(entry / "outblob")
            if not outblob:
                raise TsmReportError("configfs-tsm returned an empty outblob")
            auxblob = _read_optional(entry / "auxblob") if want_auxblob else None
            _check_generation(entry)
            return TsmReport(outblob=outblob, auxblob=auxblob or None)

    @contextlib.contextmanager
    def _entry(self) -> Iterator[Path]:
        if not self.root.is_dir():
            raise TsmReportError(f"{self.root} does not exist: the kernel has no configfs-tsm reports")
        path = self.root / f"peerpods-{os.getpid()}-{secrets.token_hex(8)}"
        try:
            self._entries.create(path)
        except OSError as exc:
            raise TsmReportError(
                f"cannot create report entry in {self.root}: {exc.strerror or exc}"
            ) from None
        try:
            provider = _read(path / "provider").decode("ascii", errors="replace").strip()
            if provider != self.provider:
                raise TsmReportError(f"configfs-tsm provider is {provider[:40]!r}, not {self.provider!r}")
            yield path
        finally:
            try:
                self._entries.remove(path)
            except OSError as exc:
                log.error("cannot remove report entry %s: %s", path, exc.strerror or exc)


def _check_generation(entry: Path) -> None:
    """Exactly one inblob write happened in this entry: ours (upstream's race check)."""
    text = _read(entry / "generation").decode("ascii", errors="replace").strip()
    if not text.isdigit():
        raise TsmReportError(f"configfs-tsm generation {text[:20]!r} is not a number")
    if int(text) != 1:
        raise TsmReportError(f"configfs-tsm generation is {int(text)}: another writer used this report entry")


def _write(path: Path, data: bytes) -> None:
    try:
        with path.open("wb", buffering=0) as f:
            f.write(data)
    except OSError as exc:
        raise TsmReportError(f"cannot write {path.name}: {exc.strerror or exc}") from None


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BLOB_BYTES + 1)
    except OSError as exc:
        raise TsmReportError(f"cannot read {path.name}: {exc.strerror or exc}") from None
    if len(data) > MAX_BLOB_BYTES:
        raise TsmReportError(f"{path.name} is larger than {MAX_BLOB_BYTES} bytes")
    return data


def _read_optional(path: Path) -> bytes | None:
    """An attribute that older kernels or other providers lack (auxblob): None when absent."""
    try:
        return _read(path)
    except TsmReportError:
        if not path.exists():
            return None
        raise
