"""The `kbs` configuration file (TOML, upstream's section and key names) and what it builds.

Sections used: `[http_server]` (`sockets`, `insecure_http`, `private_key`, `certificate`,
`payload_request_size` in MB, `worker_count`; added here: `idle_timeout`, `body_timeout` in
seconds), `[attestation_token]` (`trusted_jwk_sets`, `trusted_certs_paths`, `extra_teekey_paths`,
`insecure_header_jwk`), `[attestation_service]` (`type = "coco_as_builtin"`, `timeout` minutes;
`attestation_token_broker`, `rvps_config`, `verifier_config`, `work_dir` as the attestation
service's own configuration; or `type = "coco_as_grpc"` and `as_addr`, a separate attestation
service several KBS front ends share, see `kbs.attestation.grpc`), `[storage_backend]`
(`storage_type = "Memory" | "LocalFs" | "LocalJson" | "Postgres" | "Redis"`,
`backends.local_fs.dir_path`, `backends.local_json.file_dir_path`,
`backends.postgres.{db,username,password,port,host}`, `backends.redis.url`; `POSTGRES_URL` and
`REDIS_URL` take precedence, as upstream), top-level `session_storage_type` (the sessions' own
storage type, the backends' settings shared, as upstream),
`[[plugins]]` (`name = "resource"`, `storage_backend_type = "KvStorage"` (the storage backend) or
`"Aws"` (upstream's: read-only, the tag is the SecretId); or this KBS's `type = "kvstorage" |
"AwsSecretsManager"` (read-write, `region`, `endpoint_url`, `secret_prefix`, `kms_key_id`)) and
`[admin]` (see `kbs.admin`).

Namespaces (`kbs.storage`): `kbs` (the resource policy), `kbs_protocol_session` (sessions) and, with
the `KvStorage` resource plugin, `repository` (resources) live in the configured backend. With
`LocalFs` the resources keep the classic tree `<dir_path>/repository/<repo>/<type>/<tag>` (upstream's
flat file names cannot hold its longest resource paths), and the built-in attestation service keeps
its policies and reference values in `attestation-service/`, and, unless a signer is configured,
`token-signer.pem`, the attestation token key created by the first replica to start, so every replica
trusts every replica's tokens. `Memory` keeps all of it in one process, so it allows one worker
only. Everything is read from the storage at use, so a change through one replica holds on all of
them at their next request.

Keys are checked (`kbs.config_schema`): an unknown key is an error naming the closest known one, and
upstream values this KBS does not have (Redis sessions, a Vault backend, a TLS profile) are errors
too, never silently replaced by something else.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from kbs.admin import AdminAuth, AdminConfigError
from kbs.attestation import AttestationBackend, BuiltinAttestation, GrpcAttestation
from kbs.attestation.builtin import SharedState
from kbs.attestation.grpc import DEFAULT_ADDRESS as DEFAULT_AS_ADDRESS
from kbs.attestation.grpc import AsAddressError, as_target
from kbs.broker import Broker
from kbs.config_schema import KBS_CONFIG
from kbs.metrics import KbsMetrics
from kbs.policy import ResourcePolicy, ResourcePolicyError
from kbs.sessions import SessionStore, Sweeper
from kbs.storage import (
    AS_POLICY,
    KBS,
    REFERENCE_VALUE,
    REPOSITORY,
    SESSIONS,
    StorageError,
    StorageFactory,
    StorageSettings,
    storage_type,
)
from kbs.storage.factory import LOCAL_FS, LOCAL_JSON, MEMORY, POSTGRES, REDIS
from kbs.store import (
    AsyncResourceStore,
    FileResourceStore,
    KvResourceStore,
    MemoryResourceStore,
    StoreError,
    ThreadedResourceStore,
)
from kbs.token import TokenError, TokenSettings, TokenVerifier
from protocols.atomicfile import temp_name
from protocols.strictconfig import StrictConfigError, check_keys
from verifier.api import VerifierRegistry
from verifier.server import config as as_config
from verifier.service import AttestationService

DEFAULT_SOCKET = "127.0.0.1:8080"
SIGNER_FILE = "token-signer.pem"
AS_BUILTIN, AS_GRPC = "coco_as_builtin", "coco_as_grpc"
# resource plugin backends: upstream's `storage_backend_type` values and this KBS's `type` values
KVSTORAGE, AWS_SECRETS_MANAGER, AWS_BY_TAG = "kvstorage", "AwsSecretsManager", "Aws"
RESOURCE_BACKENDS = {
    "kvstorage": KVSTORAGE,
    "KvStorage": KVSTORAGE,
    "AwsSecretsManager": AWS_SECRETS_MANAGER,
    "Aws": AWS_BY_TAG,
    "aws": AWS_BY_TAG,
}
UPSTREAM_ONLY_BACKENDS = ("Aliyun", "aliyun", "Gcp", "gcp", "Vault", "vault")
TLS_PROFILE = "intermediate"  # what the TLS context here gives: TLS 1.2 and 1.3, default ciphers


class KbsConfigError(Exception):
    """The configuration file is unreadable or invalid; the message names the key."""


@dataclass
class HttpServer:
    sockets: list[str] = field(default_factory=lambda: [DEFAULT_SOCKET])
    insecure_http: bool = False
    private_key: Path | None = None
    certificate: Path | None = None
    payload_request_size: int = 2  # MB
    worker_count: int = 1
    idle_timeout: int = 30  # seconds without a complete request head (idle, or a head still arriving)
    body_timeout: int = 30  # seconds for a request body to arrive

    @property
    def max_body(self) -> int:
        return self.payload_request_size * 1024 * 1024


@dataclass
class KbsConfig:
    http: HttpServer
    token: TokenSettings
    attestation_service: dict[str, Any]
    session_timeout_min: int
    storage: StorageSettings
    resource_plugin: dict[str, Any]
    resource_backend: str
    admin: dict[str, Any]

    @property
    def storage_dir(self) -> Path | None:
        """The LocalFs directory when everything is stored there (what the built-in attestation
        service and the shared token signing key use); None otherwise."""
        return self.storage.local_fs if self.storage.type == LOCAL_FS else None


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise KbsConfigError(f"[{key}] must be a table")
    return value


def _get(doc: dict[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    value = doc.get(key, default)
    if value is default:
        return value
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise KbsConfigError(f"{where}.{key} must be a {kind.__name__}")
    return value


def _strings(doc: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = _get(doc, key, list, [], where)
    if not all(isinstance(item, str) for item in value):
        raise KbsConfigError(f"{where}.{key} must be a list of strings")
    return tuple(value)


def _optional_path(doc: dict[str, Any], key: str, where: str) -> Path | None:
    value = _get(doc, key, str, None, where)
    return Path(value) if value else None


def _storage_kind(value: Any, where: str) -> str:
    try:
        return storage_type(value, where)
    except StorageError as exc:
        raise KbsConfigError(str(exc)) from None


def _resource_backend(plugin: dict[str, Any]) -> str:
    """`storage_backend_type` (upstream) or `type` (this KBS's own name for it)."""
    given = {key: plugin[key] for key in ("storage_backend_type", "type") if key in plugin}
    if len(set(map(str, given.values()))) > 1:
        raise KbsConfigError("[[plugins]] resource: storage_backend_type and type disagree; set one")
    value = next(iter(given.values()), KVSTORAGE)
    backend = RESOURCE_BACKENDS.get(value) if isinstance(value, str) else None
    if backend is not None:
        return backend
    key = next(iter(given))
    if value in UPSTREAM_ONLY_BACKENDS:
        raise KbsConfigError(
            f"[[plugins]] resource {key} {value!r} is upstream's but not available here"
            " (KvStorage, Aws, AwsSecretsManager)"
        )
    raise KbsConfigError(
        f"[[plugins]] resource {key} {str(value)[:40]!r} is not KvStorage, Aws or AwsSecretsManager"
    )


def _check_tls(http_doc: dict[str, Any]) -> None:
    """Upstream's TLS tuning keys: only what this KBS does anyway is accepted, never ignored."""
    profile = http_doc.get("tls_profile", TLS_PROFILE)
    if profile != TLS_PROFILE:
        raise KbsConfigError(
            f"http_server.tls_profile {str(profile)[:20]!r} is not available here (only {TLS_PROFILE!r})"
        )
    custom = [
        key for key in ("tls_min_version", "tls_max_version", "tls_ciphers", "tls_groups") if key in http_doc
    ]
    if custom:
        raise KbsConfigError(f"http_server.{custom[0]} is not available here (TLS 1.2-1.3, default ciphers)")


def parse_config(text: str, source: str = "configuration") -> KbsConfig:
    """`source` (the file's name) starts each line of an error about keys."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise KbsConfigError(f"configuration is not TOML: {exc}") from None
    try:
        check_keys(doc, KBS_CONFIG, source)
    except StrictConfigError as exc:
        raise KbsConfigError(str(exc)) from None
    http_doc = _table(doc, "http_server")
    http = HttpServer(
        sockets=list(_strings(http_doc, "sockets", "http_server") or [DEFAULT_SOCKET]),
        insecure_http=_get(http_doc, "insecure_http", bool, False, "http_server"),
        private_key=_optional_path(http_doc, "private_key", "http_server"),
        certificate=_optional_path(http_doc, "certificate", "http_server"),
        payload_request_size=_get(http_doc, "payload_request_size", int, 2, "http_server"),
        worker_count=_get(http_doc, "worker_count", int, 1, "http_server"),
        idle_timeout=_get(http_doc, "idle_timeout", int, 30, "http_server"),
        body_timeout=_get(http_doc, "body_timeout", int, 30, "http_server"),
    )
    if min(http.payload_request_size, http.worker_count, http.idle_timeout, http.body_timeout) < 1:
        raise KbsConfigError(
            "http_server.payload_request_size, worker_count, idle_timeout and body_timeout must be at least 1"
        )
    _check_tls(http_doc)
    if not http.insecure_http and (http.private_key is None or http.certificate is None):
        raise KbsConfigError("HTTPS needs http_server.private_key and certificate (or insecure_http = true)")
    token_doc = _table(doc, "attestation_token")
    token = TokenSettings(
        trusted_jwk_sets=_strings(token_doc, "trusted_jwk_sets", "attestation_token"),
        trusted_certs_paths=_strings(token_doc, "trusted_certs_paths", "attestation_token"),
        extra_teekey_paths=_strings(token_doc, "extra_teekey_paths", "attestation_token"),
        insecure_header_jwk=_get(token_doc, "insecure_header_jwk", bool, False, "attestation_token"),
    )
    service = _table(doc, "attestation_service")
    kind = service.get("type", AS_BUILTIN)
    if kind not in (AS_BUILTIN, AS_GRPC):
        raise KbsConfigError(
            f"attestation_service.type {str(kind)[:40]!r} is not supported ({AS_BUILTIN}, {AS_GRPC})"
        )
    timeout = _get(service, "timeout", int, 5, "attestation_service")
    if kind == AS_GRPC:
        extra = sorted(set(service) - {"type", "timeout", "as_addr"})
        if extra:
            raise KbsConfigError(f"attestation_service.{extra[0]} is not a coco_as_grpc key (as_addr)")
        try:
            as_target(_get(service, "as_addr", str, DEFAULT_AS_ADDRESS, "attestation_service"))
        except AsAddressError as exc:
            raise KbsConfigError(str(exc)) from None
    storage = _storage_settings(doc)
    if not storage.shared and http.worker_count > 1:
        raise KbsConfigError(
            "worker_count > 1 needs storage_type LocalFs, LocalJson, Postgres or Redis, which workers"
            " share (session_storage_type too, if set)"
        )
    plugins = doc.get("plugins", [])
    resource = next((p for p in plugins if p.get("name") == "resource"), {"name": "resource"})
    return KbsConfig(
        http=http,
        token=token,
        attestation_service=service,
        session_timeout_min=timeout,
        storage=storage,
        resource_plugin=resource,
        resource_backend=_resource_backend(resource),
        admin=_table(doc, "admin"),
    )


def _storage_settings(doc: dict[str, Any]) -> StorageSettings:
    """`[storage_backend]` and upstream's top-level `session_storage_type` (the sessions' own type,
    the backends' settings shared)."""
    storage = _table(doc, "storage_backend")
    kind = _storage_kind(storage.get("storage_type", MEMORY), "storage_backend.storage_type")
    session_type = _storage_kind(doc.get("session_storage_type", kind), "session_storage_type")
    backends = _table(storage, "backends")
    where = "storage_backend.backends"
    local_fs = _optional_path(_table(backends, "local_fs"), "dir_path", f"{where}.local_fs")
    local_json = _optional_path(_table(backends, "local_json"), "file_dir_path", f"{where}.local_json")
    if LOCAL_FS in (kind, session_type) and local_fs is None:
        raise KbsConfigError(f"storage type LocalFs needs {where}.local_fs.dir_path")
    if LOCAL_JSON in (kind, session_type) and local_json is None:
        raise KbsConfigError(f"storage type LocalJson needs {where}.local_json.file_dir_path")
    postgres = _table(backends, "postgres")
    for key, kind_of in (("db", str), ("username", str), ("password", str), ("host", str), ("port", int)):
        _get(postgres, key, kind_of, None, f"{where}.postgres")
    redis = _table(backends, "redis")
    _get(redis, "url", str, None, f"{where}.redis")
    return StorageSettings(
        type=kind,
        session_type=session_type,
        local_fs=local_fs or Path(),
        local_json=local_json or Path(),
        postgres=postgres,
        redis=redis,
    )


def load_config(path: Path) -> KbsConfig:
    try:
        return parse_config(path.read_text(encoding="utf-8"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise KbsConfigError(f"cannot read configuration {path}: {exc}") from None


def _shared_signer(directory: Path) -> Path:
    """The replicas' common token signing key, created once if absent: written to a temporary file,
    then hard-linked into place, so no replica ever reads a half-written key."""
    path = directory / SIGNER_FILE
    if path.exists():
        return path
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another replica made it first: use theirs
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def build_attestation_service(
    config: KbsConfig, verifiers: VerifierRegistry | None = None
) -> AttestationService:
    """The built-in attestation service (`verifiers` replaces the registry built from the config)."""
    # the attestation service's own configuration: without the KBS's keys, which it does not know
    section = {k: v for k, v in config.attestation_service.items() if k not in ("type", "timeout")}
    if config.storage_dir is not None:
        section.setdefault("work_dir", str(config.storage_dir / "attestation-service"))
        broker = dict(section.get("attestation_token_broker") or {})
        if not broker.get("signer"):
            try:
                config.storage_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # signer, sessions
                broker["signer"] = {"key_path": str(_shared_signer(config.storage_dir))}
            except OSError as exc:
                raise KbsConfigError(
                    f"cannot create the token signing key in {config.storage_dir}: {exc}"
                ) from None
            section["attestation_token_broker"] = broker
    try:
        service = as_config.build_service(as_config.parse_config(json.dumps(section)))
    except (as_config.ConfigError, TypeError, ValueError) as exc:
        raise KbsConfigError(f"attestation_service: {exc}") from None
    if verifiers is not None:
        service.verifiers = verifiers
    return service


def build_store(config: KbsConfig, storage: StorageFactory) -> AsyncResourceStore:
    plugin = config.resource_plugin
    if config.resource_backend == KVSTORAGE:
        if config.storage.type == MEMORY:
            return ThreadedResourceStore(MemoryResourceStore())
        if config.storage.type == LOCAL_FS:
            return ThreadedResourceStore(FileResourceStore(config.storage.local_fs / REPOSITORY))
        return KvResourceStore(storage.open(REPOSITORY))
    import boto3  # the aws extra; only needed for these backends

    from kbs.store.aws import DEFAULT_PREFIX, SecretsManagerStore, TagSecretsStore

    client = boto3.client(
        "secretsmanager", region_name=plugin.get("region"), endpoint_url=plugin.get("endpoint_url")
    )
    if config.resource_backend == AWS_BY_TAG:
        return ThreadedResourceStore(TagSecretsStore(client))
    return ThreadedResourceStore(
        SecretsManagerStore(client, plugin.get("secret_prefix", DEFAULT_PREFIX), plugin.get("kms_key_id"))
    )


def build_attestation(
    config: KbsConfig, storage: StorageFactory, verifiers: VerifierRegistry | None = None
) -> AttestationBackend:
    """The attestation service the configuration names; a built-in one keeps its policies and
    reference values in the storage when replicas share one that is not LocalFs (whose files it
    reads itself), its signing key too unless one is configured."""
    if config.attestation_service.get("type") == AS_GRPC:
        return GrpcAttestation(config.attestation_service.get("as_addr", DEFAULT_AS_ADDRESS))
    service = build_attestation_service(config, verifiers)
    if config.storage.type not in (LOCAL_JSON, POSTGRES, REDIS):
        return BuiltinAttestation(service)
    broker = config.attestation_service.get("attestation_token_broker") or {}
    shared = SharedState(
        policies=storage.open(AS_POLICY),
        values=storage.open(REFERENCE_VALUE),
        kbs=storage.open(KBS),
        share_signer=not broker.get("signer"),
    )
    return BuiltinAttestation(service, shared)


def build_broker(config: KbsConfig, verifiers: VerifierRegistry | None = None) -> Broker:
    """Everything the configuration describes, opened and checked."""
    try:
        storage = StorageFactory(config.storage)
        attestation = build_attestation(config, storage, verifiers)
        sessions = SessionStore(storage.open(SESSIONS), timeout=config.session_timeout_min * 60)
        kbs_namespace = storage.open(KBS)
        return Broker(
            attestation=attestation,
            sessions=sessions,
            tokens=TokenVerifier(config.token, attestation.own_keys()),
            policy=ResourcePolicy(kbs_namespace),
            store=build_store(config, storage),
            admin=AdminAuth.from_config(config.admin),
            metrics=KbsMetrics(),
            storage=storage,
            sweeper=Sweeper(sessions, kbs_namespace),
        )
    except (StorageError, TokenError, ResourcePolicyError, StoreError, AdminConfigError) as exc:
        raise KbsConfigError(str(exc)) from None
