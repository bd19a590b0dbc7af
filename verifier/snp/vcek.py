"""Where a VCEK comes from when the evidence does not carry one: a cache, an offline store, AMD KDS.

A VCEK is named by the chip (HWID) and the TCB it was derived for. Sources share one tiny interface
(`fetch(key) -> DER bytes`, `VcekUnavailable` when they do not have it), so the verifier can try them
in the configured order. The offline store uses upstream Trustee's file layout, and so does the
cache's on-disk directory: a cache directory can be copied to an air-gapped site as its store.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from verifier.errors import VerificationError
from verifier.lru import LruCache
from verifier.snp.report import Generation, TcbVersion

log = logging.getLogger(__name__)

# Upstream's default offline store location (attestation-service docs/amd-offline-certificate-cache.md).
DEFAULT_OFFLINE_STORE = Path("/opt/confidential-containers/attestation-service/kds-store")
# A VCEK is ~1.4 KB; anything far larger is not one.
MAX_VCEK_SIZE = 64 * 1024


class VcekUnavailable(VerificationError):
    """No configured source could supply the VCEK."""

    def __init__(self, message: str) -> None:
        super().__init__("vcek_unavailable", message)


@dataclass(frozen=True)
class VcekKey:
    """Which VCEK a report needs: product line, chip and reported TCB."""

    generation: Generation
    chip_id: bytes
    tcb: TcbVersion

    @property
    def hwid(self) -> str:
        """The chip id as KDS names it: Turin uses only its first 8 bytes."""
        chip = self.chip_id[:8] if self.generation is Generation.TURIN else self.chip_id
        return chip.hex()

    @property
    def tcb_stem(self) -> str:
        """`bl03_tee00_snp08_ucode115[_fmc05]`: the TCB part of an offline-store file name."""
        tcb = self.tcb
        stem = f"bl{tcb.bootloader:02}_tee{tcb.tee:02}_snp{tcb.snp:02}_ucode{tcb.microcode:02}"
        return stem if tcb.fmc is None else f"{stem}_fmc{tcb.fmc:02}"

    def describe(self) -> str:
        return f"{self.generation.value} chip {self.hwid[:16]}... at {self.tcb_stem}"


class VcekSource(Protocol):
    def fetch(self, key: VcekKey) -> bytes:
        """The VCEK's DER bytes; raises `VcekUnavailable` when this source does not have it."""
        ...


def _read_limited(path: Path) -> bytes:
    with path.open("rb") as f:
        data = f.read(MAX_VCEK_SIZE + 1)
    if len(data) > MAX_VCEK_SIZE:
        raise VcekUnavailable(f"{path} is larger than {MAX_VCEK_SIZE} bytes")
    return data


class OfflineStore:
    """Pre-fetched VCEKs: `{root}/vcek/{hwid}/{tcb_stem}_vcek.der`, else `{root}/vcek/{hwid}/vcek.der`."""

    def __init__(self, root: Path = DEFAULT_OFFLINE_STORE) -> None:
        self.root = root

    def path_for(self, key: VcekKey) -> Path:
        return self.root / "vcek" / key.hwid / f"{key.tcb_stem}_vcek.der"

    def fetch(self, key: VcekKey) -> bytes:
        specific = self.path_for(key)
        fallback = specific.with_name("vcek.der")
        for path in (specific, fallback):
            try:
                return _read_limited(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                # A store that cannot be read is reported, not mistaken for a missing file.
                raise VcekUnavailable(f"offline store file {path} cannot be read: {exc}") from None
        raise VcekUnavailable(f"offline store {self.root} has no VCEK for {key.describe()}")


class VcekFile:
    """One VCEK/VLEK file offered for every report (ours, for checking one report offline); the
    chain, TCB and HWID checks decide whether it is the report's."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fetch(self, key: VcekKey) -> bytes:
        try:
            data = _read_limited(self.path)
        except OSError as exc:
            raise VcekUnavailable(f"VCEK file {self.path} cannot be read: {exc.strerror}") from None
        if data.startswith(b"-----BEGIN"):
            try:  # PEM armour only: the certificate itself is read at the DER level (serial 0)
                return ssl.PEM_cert_to_DER_cert(data.decode("ascii"))
            except (ValueError, UnicodeDecodeError) as exc:
                raise VcekUnavailable(f"VCEK file {self.path} is not a PEM certificate: {exc}") from None
        return data


class VcekCache:
    """VCEKs fetched before: an in-memory LRU, optionally backed by a directory in store layout.

    Only VCEKs whose chain verified are put here, so a bad KDS answer is never replayed.
    """

    def __init__(self, capacity: int = 1024, directory: Path | None = None) -> None:
        self._memory: LruCache[tuple[str, str], bytes] = LruCache(capacity)
        self._disk = OfflineStore(directory) if directory is not None else None

    def get(self, key: VcekKey) -> bytes | None:
        cached = self._memory.get((key.hwid, key.tcb_stem))
        if cached is not None or self._disk is None:
            return cached
        try:
            data = _read_limited(self._disk.path_for(key))
        except (OSError, VcekUnavailable):
            return None
        self._memory.put((key.hwid, key.tcb_stem), data)
        return data

    def put(self, key: VcekKey, der: bytes) -> None:
        self._memory.put((key.hwid, key.tcb_stem), der)
        if self._disk is not None:
            self._write(self._disk.path_for(key), der)

    @staticmethod
    def _write(path: Path, der: bytes) -> None:
        """Atomic replace, so a concurrent reader never sees half a certificate; a cache that cannot
        be written is logged, never a reason to fail a verification."""
        tmp: Path | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=".vcek-")
            tmp = Path(name)
            with os.fdopen(fd, "wb") as f:
                f.write(der)
            tmp.replace(path)
            tmp = None
        except OSError as exc:
            log.warning("VCEK cache directory not updated (%s): %s", path, exc)
        finally:
            if tmp is not None:
                tmp.unlink(missing_ok=True)
