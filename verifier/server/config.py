"""`attestation-service` configuration: upstream's JSON config file keys plus listen addresses.

Upstream keys used: `work_dir`, `storage_backend` (`LocalFs` only: its `dir_path` is the work dir),
`rvps_config.type` (only `BuiltIn`; `storage_type`, `extractors` accepted: the store is one JSON file),
`attestation_token_broker` (`type` (only `Ear`), `duration_min`, `issuer_name`, `developer_name`,
`build_name`, `profile_name`, `verbose_token`, `policy_dir`, `signer.key_path` / `cert_path` /
`cert_url`), `verifier_config` (handed to the verifiers: `snp_verifier.vcek_sources`,
`dcap_verifier.collateral_service` / `tcb_update_type`, and our options, see `verifier.options`).
Added: `policy_dir`, `rvps_config.store_path`, `socket` (REST) and `grpc_socket`. An unknown key is an
error naming the closest known one, and the verifier options are checked here, at start, rather than
at the first evidence. With `work_dir` and no explicit paths, policies live in `<work_dir>/policies`
and reference values in `<work_dir>/reference_values.json`; with neither, both are in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from protocols.strictconfig import Table, check_keys
from verifier import options as verifier_options
from verifier.api import VerifierRegistry
from verifier.ear import EarError, EarSigner, TokenSettings
from verifier.jsonutil import JsonError, strict_loads
from verifier.policy import PolicyError
from verifier.rvps import ReferenceValueStore, RvpsError
from verifier.service import AttestationService, ServiceSettings

DEFAULT_REST_SOCKET = "127.0.0.1:8080"
DEFAULT_GRPC_SOCKET = "127.0.0.1:50004"


class ConfigError(Exception):
    """The configuration file or a flag is invalid."""


_SIGNER = Table(dict.fromkeys(("key_path", "cert_path", "cert_url")))
_BROKER_KEYS = ("type", "policy_dir", *(option.name for option in fields(TokenSettings)))
CONFIG = Table(
    {
        "socket": None,
        "grpc_socket": None,
        "work_dir": None,
        "policy_dir": None,
        "rvps_config": Table(
            {
                **dict.fromkeys(("type", "store_path", "storage_type", "extractors", "address")),
                "storage": Table(dict.fromkeys(("type", "file_path"))),
            }
        ),
        "storage_backend": Table({"storage_type": None, "backends": Table(open=True)}),
        "attestation_token_broker": Table({**dict.fromkeys(_BROKER_KEYS), "signer": _SIGNER}),
        "verifier_config": verifier_options.VERIFIER_CONFIG,
    }
)


@dataclass
class ServerConfig:
    socket: str = DEFAULT_REST_SOCKET  # "" disables the REST API
    grpc_socket: str = DEFAULT_GRPC_SOCKET  # "" disables the gRPC API
    work_dir: Path | None = None
    policy_dir: Path | None = None
    rvps_store: Path | None = None
    token: TokenSettings = field(default_factory=TokenSettings)
    signer_key: Path | None = None
    signer_cert: Path | None = None
    signer_cert_url: str | None = None
    https_cert: Path | None = None
    https_key: Path | None = None
    verifier_config: dict[str, Any] = field(default_factory=dict)

    def resolved_policy_dir(self) -> Path | None:
        if self.policy_dir is None and self.work_dir is not None:
            return self.work_dir / "policies"
        return self.policy_dir

    def resolved_rvps_store(self) -> Path | None:
        if self.rvps_store is None and self.work_dir is not None:
            return self.work_dir / "reference_values.json"
        return self.rvps_store


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be an object")
    return value


def _optional(doc: dict[str, Any], key: str, kind: type) -> Any:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{key} must be a {kind.__name__}")
    return value


def _path(doc: dict[str, Any], key: str) -> Path | None:
    value = _optional(doc, key, str)
    return Path(value) if value is not None else None


def _token_settings(broker: dict[str, Any]) -> TokenSettings:
    if broker.get("type", "Ear") != "Ear":
        raise ConfigError(
            f"attestation_token_broker.type {str(broker['type'])[:40]!r} is not supported (only Ear)"
        )
    given = {}
    for option in fields(TokenSettings):
        value = _optional(
            broker, option.name, bool if option.name == "verbose_token" else type(option.default)
        )
        if value is not None:
            given[option.name] = value
    settings = TokenSettings(**given)
    if settings.duration_min <= 0:
        raise ConfigError("attestation_token_broker.duration_min must be positive")
    return settings


def _storage_dir(storage: dict[str, Any]) -> Path | None:
    """Upstream's unified storage: only LocalFs, whose directory then holds what `work_dir` would."""
    if not storage:
        return None
    if storage.get("storage_type") != "LocalFs":
        kind = str(storage.get("storage_type"))[:40]
        raise ConfigError(f"storage_backend.storage_type {kind!r} is not supported (only LocalFs)")
    local_fs = _section(_section(storage, "backends"), "local_fs")
    return _path(local_fs, "dir_path")


def parse_config(text: str | bytes) -> ServerConfig:
    """The JSON configuration file's content -> ServerConfig."""
    try:
        doc = strict_loads(text)
    except JsonError as exc:
        raise ConfigError(f"configuration: {exc}") from None
    if not isinstance(doc, dict):
        raise ConfigError("configuration must be a JSON object")
    try:
        check_keys(doc, CONFIG)
        verifier_options.check(_section(doc, "verifier_config"))
    except ValueError as exc:  # StrictConfigError and OptionsError
        raise ConfigError(str(exc)) from None
    rvps = _section(doc, "rvps_config")
    if rvps.get("type", "BuiltIn") != "BuiltIn":
        raise ConfigError(f"rvps_config.type {str(rvps.get('type'))[:40]!r} is not supported (only BuiltIn)")
    broker = _section(doc, "attestation_token_broker")
    signer = _section(broker, "signer")
    if signer and _optional(signer, "key_path", str) is None:
        raise ConfigError("attestation_token_broker.signer needs key_path")
    return ServerConfig(
        socket=_optional(doc, "socket", str) if "socket" in doc else DEFAULT_REST_SOCKET,
        grpc_socket=_optional(doc, "grpc_socket", str) if "grpc_socket" in doc else DEFAULT_GRPC_SOCKET,
        work_dir=_path(doc, "work_dir") or _storage_dir(_section(doc, "storage_backend")),
        policy_dir=_path(doc, "policy_dir") or _path(broker, "policy_dir"),
        rvps_store=_path(rvps, "store_path") or _path(_section(rvps, "storage"), "file_path"),
        token=_token_settings(broker),
        signer_key=_path(signer, "key_path"),
        signer_cert=_path(signer, "cert_path"),
        signer_cert_url=_optional(signer, "cert_url", str),
        verifier_config=_section(doc, "verifier_config"),
    )


def load_config(path: Path) -> ServerConfig:
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from None
    return parse_config(text)


def build_service(config: ServerConfig) -> AttestationService:
    """The service the configuration describes (signing key loaded, stores opened)."""
    try:
        if config.signer_key is not None:
            signer = EarSigner.from_files(config.signer_key, config.signer_cert, config.signer_cert_url)
        elif config.signer_cert is not None:
            raise ConfigError("a token signer certificate needs its key (signer key_path)")
        else:
            signer = EarSigner.ephemeral()
        return AttestationService(
            rvps=ReferenceValueStore(config.resolved_rvps_store()),
            signer=signer,
            verifiers=VerifierRegistry(config.verifier_config),
            settings=ServiceSettings(token=config.token),
            policy_dir=config.resolved_policy_dir(),
        )
    except (EarError, RvpsError, PolicyError) as exc:
        raise ConfigError(str(exc)) from None
