"""aa.toml, the attestation agent's configuration, with upstream's keys:

    [token_configs.kbs]
    url = "http://kbs:8080"
    cert = "-----BEGIN CERTIFICATE-----..."    # optional, trusted for an https KBS
    tee_key_algorithm = "ECDH-ES+A256KW-P256"  # or ECDH-ES+A256KW-P521, RSA-OAEP-256
    [log]
    level = "info"

Without a config file upstream falls back to `aa_kbc_params` (`cc_kbc::<url>`) from the
`AA_KBC_PARAMS` environment variable or the kernel command line (`agent.aa_kbc_params=`); so does
this agent. Keys it does not use (`coco_as`, `eventlog_config`) are accepted and ignored, as upstream's
config loader ignores unknown keys.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from podvm.attestation_agent.errors import ConfigError
from protocols.kbs_client.teekey import DEFAULT_ALGORITHM, TEE_KEY_ALGORITHMS

AA_KBC_PARAMS_ENV = "AA_KBC_PARAMS"
CMDLINE_KEY = "agent.aa_kbc_params="
KBS_KBC = "cc_kbc"
MAX_CONFIG_BYTES = 1024 * 1024
# `[log] level` (upstream's tracing levels) -> Python logging levels
LOG_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}


@dataclass(frozen=True, slots=True)
class KbsConfig:
    url: str
    cert: str | None = None
    tee_key_algorithm: str = DEFAULT_ALGORITHM


@dataclass(frozen=True, slots=True)
class AaConfig:
    kbs: KbsConfig | None = None
    log_level: str = "info"


def parse_aa_config(text: str) -> AaConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"aa.toml is not valid TOML: {exc}") from None
    tokens = _table(doc, "token_configs")
    kbs_table = tokens.get("kbs")
    kbs = None
    if kbs_table is not None:
        kbs_doc = _table(tokens, "kbs", "token_configs.")
        url = _string(kbs_doc, "url", "token_configs.kbs", required=True)
        assert url is not None
        algorithm = _string(kbs_doc, "tee_key_algorithm", "token_configs.kbs") or DEFAULT_ALGORITHM
        if algorithm not in TEE_KEY_ALGORITHMS:
            raise ConfigError(
                f"token_configs.kbs.tee_key_algorithm {algorithm[:40]!r} is not one of {TEE_KEY_ALGORITHMS}"
            )
        kbs = KbsConfig(
            url=_kbs_url(url), cert=_string(kbs_doc, "cert", "token_configs.kbs"), tee_key_algorithm=algorithm
        )
    level = (_string(_table(doc, "log"), "level", "log") or "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log.level {level[:20]!r} is not one of {', '.join(LOG_LEVELS)}")
    return AaConfig(kbs=kbs, log_level=level)


def parse_aa_kbc_params(value: str) -> AaConfig:
    """`cc_kbc::<url>`; any other KBC (offline_fs_kbc, ...) means no KBS."""
    kbc, sep, uri = value.strip().partition("::")
    if not sep or "::" in uri:
        raise ConfigError(f"aa_kbc_params {value[:80]!r} is not <kbc>::<uri>")
    if kbc != KBS_KBC:
        return AaConfig()
    return AaConfig(kbs=KbsConfig(url=_kbs_url(uri)))


def load_aa_config(path: Path | None, cmdline: Path = Path("/proc/cmdline")) -> AaConfig:
    """From `path`, or else from AA_KBC_PARAMS / the kernel command line (no KBS when neither)."""
    if path is not None:
        try:
            with path.open("rb") as f:
                raw = f.read(MAX_CONFIG_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        if len(raw) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            return parse_aa_config(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8") from None
    params = os.environ.get(AA_KBC_PARAMS_ENV)
    if params is None:
        try:
            words = cmdline.read_text(encoding="utf-8", errors="replace").split()
        except OSError:
            words = []
        params = next((w.removeprefix(CMDLINE_KEY) for w in words if w.startswith(CMDLINE_KEY)), None)
    return AaConfig() if params is None else parse_aa_kbc_params(params)


def _kbs_url(url: str) -> str:
    if not url.startswith(("http://", "https://")) or len(url) > 2048:
        raise ConfigError(f"KBS url {url[:80]!r} must be an http:// or https:// URL")
    return url


def _table(doc: Mapping[str, Any], key: str, prefix: str = "") -> Mapping[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{prefix}{key} must be a table")
    return value


def _string(doc: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{where}.{key} is required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key} must be a string")
    return value
