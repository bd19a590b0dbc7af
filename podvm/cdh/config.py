"""cdh.toml, as the pod VM gets it from the init data (`/run/peerpod/cdh.toml`): the KBS to attest to
(`[kbc] url`, `kbs_cert`) and the `[image]` settings (policy, sigstore config and registry credential
URIs). Keys this CDH does not use are ignored, so upstream's full file is accepted."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from podvm.cdh.errors import ConfigError

DEFAULT_SOCKET = Path("/run/confidential-containers/cdh.sock")
# cloud-api-adaptor sets CDH_DEFAULT_IMAGE_AUTHENTICATED_REGISTRY_CREDENTIALS to this file.
DEFAULT_CREDENTIALS_URI = "file:///run/peerpod/auth.json"
DEFAULT_WORK_DIR = Path("/run/kata-containers/image")


@dataclass(frozen=True, slots=True)
class ImageSettings:
    policy_uri: str | None = None
    policy_inline: str | None = None
    sigstore_config_uri: str | None = None
    credentials_uri: str | None = DEFAULT_CREDENTIALS_URI
    work_dir: Path = DEFAULT_WORK_DIR


@dataclass(frozen=True, slots=True)
class CdhConfig:
    socket: Path = DEFAULT_SOCKET
    kbs_url: str | None = None
    kbs_cert: str | None = None
    image: ImageSettings = field(default_factory=ImageSettings)


def parse_cdh_config(text: str) -> CdhConfig:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cdh.toml is not TOML: {exc}") from None
    kbc = _table(doc, "kbc")
    image = _table(doc, "image")
    socket = _string(doc, "socket")
    credentials = _string(image, "authenticated_registry_credentials_uri")
    work_dir = _string(image, "work_dir")
    return CdhConfig(
        socket=Path(socket.removeprefix("unix://")) if socket else DEFAULT_SOCKET,
        kbs_url=_string(kbc, "url") or None,
        kbs_cert=_string(kbc, "kbs_cert") or None,
        image=ImageSettings(
            policy_uri=_string(image, "image_security_policy_uri") or None,
            policy_inline=_string(image, "image_security_policy") or None,
            sigstore_config_uri=_string(image, "sigstore_config_uri") or None,
            credentials_uri=credentials or DEFAULT_CREDENTIALS_URI,
            work_dir=Path(work_dir) if work_dir else DEFAULT_WORK_DIR,
        ),
    )


def load_cdh_config(path: Path) -> CdhConfig:
    try:
        return parse_cdh_config(path.read_text())
    except FileNotFoundError:
        return CdhConfig()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def _table(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"cdh.toml: [{key}] must be a table")
    return value


def _string(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"cdh.toml: {key} must be a string")
    return value
