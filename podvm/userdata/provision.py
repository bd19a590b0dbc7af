"""Write what the user data and initdata may write, and nothing else.

The user data arrives through the untrusted host/cloud, so only the allow-listed paths are written
(exact string match: `/run/peerpod/../../etc/x` or `//run/peerpod/aa.toml` is refused), and only
the allow-listed initdata entries are materialised. The initdata digest is written last: it is what
the attester reports and what `ExecStartPost` extends into PCR 8.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from podvm.userdata.detect import DMI_DIR, detect_source_name
from podvm.userdata.errors import ProvisionError
from podvm.userdata.fsutil import atomic_write
from podvm.userdata.retrieve import DEFAULT_FETCH_TIMEOUT, DEFAULT_RETRY_DELAY, retrieve_cloud_config
from podvm.userdata.sources import SourceSettings, build_source
from protocols.cloudconfig import ALLOWED_WRITE_FILES, INITDATA_PATH, PEERPOD_DIR, WriteFile
from protocols.initdata import (
    ALLOWED_DATA_FILES,
    DEFAULT_INITDATA_TOML,
    MAX_INITDATA_FILE_BYTES,
    InitData,
    InitDataError,
    decode_initdata,
    encode_initdata,
)

log = logging.getLogger(__name__)

INITDATA_DIGEST_PATH = f"{PEERPOD_DIR}/initdata.digest"


@dataclass(frozen=True, slots=True)
class ProvisionConfig:
    """Everything `provision-files` needs; `root` prefixes every path written or read under /run."""

    root: Path = Path("/")
    source: str = "auto"
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT
    retry_delay: float = DEFAULT_RETRY_DELAY
    sources: SourceSettings = field(default_factory=SourceSettings)
    dmi_dir: Path = Path(DMI_DIR)


def under_root(root: Path, absolute: str) -> Path:
    """`absolute` (an allow-listed, absolute path) relocated below `root`."""
    return root / absolute.lstrip("/")


def write_user_files(files: Iterable[WriteFile], root: Path) -> list[str]:
    """Write allow-listed entries (mode 0644, atomically); return the paths written."""
    written = []
    for wf in files:
        if wf.path not in ALLOWED_WRITE_FILES:
            log.warning("refusing to write %r: not an allowed user data path", wf.path)
            continue
        _write(under_root(root, wf.path), wf.content.encode("utf-8"))
        written.append(wf.path)
    return written


def apply_initdata(root: Path) -> InitData:
    """Decode the initdata file (writing the default one first if absent), materialise its
    allowed entries, and write the digest."""
    path = under_root(root, INITDATA_PATH)
    if not path.exists():
        log.info("%s not found, writing the default initdata", INITDATA_PATH)
        _write(path, encode_initdata(DEFAULT_INITDATA_TOML).encode("ascii"))
    try:
        with path.open("rb") as f:
            encoded = f.read(MAX_INITDATA_FILE_BYTES + 1)
    except OSError as exc:
        raise ProvisionError(f"cannot read {INITDATA_PATH}: {exc.strerror or exc}") from None
    if len(encoded) > MAX_INITDATA_FILE_BYTES:
        raise ProvisionError(f"{INITDATA_PATH} is larger than {MAX_INITDATA_FILE_BYTES} bytes")
    try:
        initdata = decode_initdata(encoded)
    except InitDataError as exc:
        raise ProvisionError(f"{INITDATA_PATH}: {exc}") from None
    for name, content in initdata.data.items():
        if name not in ALLOWED_DATA_FILES:
            log.warning("refusing to write initdata entry %r: not an allowed initdata file", name)
            continue
        _write(under_root(root, f"{PEERPOD_DIR}/{name}"), content.encode("utf-8"))
    _write(under_root(root, INITDATA_DIGEST_PATH), initdata.digest.encode("ascii"))
    log.info("initdata %s digest %s", initdata.algorithm, initdata.digest)
    return initdata


def provision_files(config: ProvisionConfig) -> InitData:
    """The whole `provision-files` run: user data files (if a source exists), then initdata."""
    name = config.source
    if name == "auto":
        name = detect_source_name(config.sources, config.dmi_dir) or ""
    if name:
        source = build_source(name, config.sources)
        log.info("reading user data from %s", source.name)
        files = retrieve_cloud_config(source, config.fetch_timeout, config.retry_delay)
        write_user_files(files, config.root)
    else:
        log.info("no user data source; only applying initdata")
    return apply_initdata(config.root)


def _write(path: Path, data: bytes) -> None:
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise ProvisionError(f"cannot write {path}: {exc.strerror or exc}") from None
    log.info("wrote %s (%d bytes)", path, len(data))
