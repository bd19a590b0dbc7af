"""aa.toml, the attestation agent's configuration, with upstream's keys:

    [token_configs.kbs]
    url = "http://kbs:8080"
    cert = "-----BEGIN CERTIFICATE-----..."    # optional, trusted for an https KBS
    tee_key_algorithm = "ECDH-ES+A256KW-P256"  # or ECDH-ES+A256KW-P521, RSA-OAEP-256
    [log]
    level = "info"

Without a config file upstream falls back to `aa_kbc_params` (`cc_kbc::<url>`) from the
`AA_KBC_PARAMS` environment variable or the kernel command line (`agent.aa_kbc_params=`); so does
this agent. Upstream's keys it does not use (`coco_as`, `eventlog_config`) are accepted; any other
key is an error naming the closest known key (upstream's loader would ignore a misspelt `url`, and
the agent would run without a KBS).

This process also plays upstream's confidential-data-hub, so a `cdh.toml` beside aa.toml (peer pods:
both in /run/peerpod, from init data) is read too, as strictly: its `[kbc]` names the KBS the CDH
role fetches from, which must be aa.toml's (one process, one KBS), or stands in for it when aa.toml
names none.
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
from protocols.initdata import CDH_CONFIG_NAME
from protocols.kbs_client.teekey import DEFAULT_ALGORITHM, TEE_KEY_ALGORITHMS
from protocols.strictconfig import ArrayOf, StrictConfigError, Table, check_keys

AA_KBC_PARAMS_ENV = "AA_KBC_PARAMS"
CMDLINE_KEY = "agent.aa_kbc_params="
KBS_KBC = "cc_kbc"
MAX_CONFIG_BYTES = 1024 * 1024
_LOG = Table({"level": None})
AA_TOML = Table(
    {
        "token_configs": Table(
            {
                "kbs": Table(dict.fromkeys(("url", "cert", "tee_key_algorithm"))),
                "coco_as": Table({"url": None}),
            }
        ),
        "eventlog_config": Table(dict.fromkeys(("init_pcr", "enable_eventlog", "eventlog_algorithm"))),
        "log": _LOG,
    }
)
_IMAGE_KEYS = (
    "work_dir",
    "image_security_policy_uri",
    "image_security_policy",
    "sigstore_config_uri",
    "sigstore_config",
    "authenticated_registry_credentials_uri",
    "registry_configuration_uri",
    "max_concurrent_layer_downloads_per_image",
    "extra_root_certificates",
    "kbc",
    "kbs_uri",
)
CDH_TOML = Table(
    {
        "socket": None,
        "skip_sealed_secret_verification": None,
        "kbc": Table(dict.fromkeys(("name", "url", "kbs_cert"))),
        "aa": Table({"aa_socket": None}),
        "credentials": ArrayOf(Table(dict.fromkeys(("resource_uri", "path")))),
        "image": Table(
            {
                **dict.fromkeys(_IMAGE_KEYS),
                "registry_config": None,  # containers-registries.conf(5), image-rs's to check
                "image_pull_proxy": Table(dict.fromkeys(("https_proxy", "http_proxy", "no_proxy"))),
            }
        ),
        "log": _LOG,
    }
)
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


def _document(text: str, name: str, schema: Table) -> dict[str, Any]:
    """The TOML document, its keys checked against `schema`."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name} is not valid TOML: {exc}") from None
    try:
        check_keys(doc, schema, name)
    except StrictConfigError as exc:
        raise ConfigError(str(exc)) from None
    return doc


def parse_aa_config(text: str) -> AaConfig:
    doc = _document(text, "aa.toml", AA_TOML)
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


def parse_cdh_config(text: str) -> KbsConfig | None:
    """cdh.toml's `[kbc]`: the KBS of the CDH role (None for a KBC other than cc_kbc)."""
    doc = _document(text, "cdh.toml", CDH_TOML)
    kbc = _table(doc, "kbc")
    name = _string(kbc, "name", "kbc", required=True)
    url = _string(kbc, "url", "kbc", required=True)
    assert url is not None
    if name != KBS_KBC:
        return None
    return KbsConfig(url=_kbs_url(url), cert=_string(kbc, "kbs_cert", "kbc"))


def with_cdh(aa: AaConfig, cdh: KbsConfig | None) -> AaConfig:
    """aa.toml's configuration with cdh.toml's KBS: the same one, or the only one given."""
    if cdh is None:
        return aa
    if aa.kbs is None:
        return AaConfig(kbs=cdh, log_level=aa.log_level)
    if cdh.url.rstrip("/") != aa.kbs.url.rstrip("/"):
        raise ConfigError(
            f"cdh.toml kbc.url {cdh.url[:80]!r} is not aa.toml's token_configs.kbs.url {aa.kbs.url[:80]!r}:"
            " one process serves both roles here, from one KBS"
        )
    return aa


def parse_aa_kbc_params(value: str) -> AaConfig:
    """`cc_kbc::<url>`; any other KBC (offline_fs_kbc, ...) means no KBS."""
    kbc, sep, uri = value.strip().partition("::")
    if not sep or "::" in uri:
        raise ConfigError(f"aa_kbc_params {value[:80]!r} is not <kbc>::<uri>")
    if kbc != KBS_KBC:
        return AaConfig()
    return AaConfig(kbs=KbsConfig(url=_kbs_url(uri)))


def _read(path: Path) -> str:
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8") from None


def load_aa_config(path: Path | None, cmdline: Path = Path("/proc/cmdline")) -> AaConfig:
    """From `path` (and the cdh.toml beside it, if any), or else from AA_KBC_PARAMS / the kernel
    command line (no KBS when neither)."""
    if path is not None:
        config = parse_aa_config(_read(path))
        cdh = path.with_name(CDH_CONFIG_NAME)
        return with_cdh(config, parse_cdh_config(_read(cdh))) if cdh.exists() else config
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
