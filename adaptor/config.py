"""The adaptor's own settings (upstream names), and parsing of Go-style durations like "5m"."""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from protocols.initdata import InitDataError, decode_initdata
from providers.settings import ConfigError, Setting, SettingValue

SETTINGS = [
    Setting("socket", "REMOTE_HYPERVISOR_ENDPOINT", default="/run/peerpod/hypervisor.sock",
            help="unix socket the Kata shim dials"),
    Setting("pods-dir", "PODS_DIR", default="/run/peerpod/pods", help="where per-pod agent sockets go"),
    Setting("state-dir", "PEERPODS_STATE_DIR", default="/var/lib/peerpods",
            help="sandbox database and tunnel identities (must survive restarts)"),
    Setting("owner", "PEERPODS_OWNER", default="",
            help="owner tag put on every instance (default: an id persisted in the state dir)"),
    Setting("proxy-timeout", "PROXY_TIMEOUT", default="5m", help="how long to keep dialling a new pod VM"),
    Setting("forwarder-port", "FORWARDER_PORT", kind=int, default=15150,
            help="port of agent-protocol-forwarder in the pod VM"),
    Setting("initdata", "INITDATA", default="", help="default initdata, base64(gzip(TOML))"),
    Setting("tls-min-version", "TLS_MIN_VERSION", default="VersionTLS12",
            help="VersionTLS12 or VersionTLS13, for the agent tunnel"),
    Setting("auth-json-file", "AUTH_JSON_FILE", default="",
            help="registry credentials (containers auth.json) sent to every pod VM"),
    Setting("enable-scratch-space", "ENABLE_SCRATCH_SPACE", kind=bool, default=False,
            help="ask pod VMs to encrypt a scratch disk for image layers"),
    Setting("probe-port", "PROBE_PORT", kind=int, default=8000,
            help="port on 127.0.0.1 for /startup, /healthz and /metrics (0: none)"),
]  # fmt: skip

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(h|m|s|ms)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
AUTH_JSON_LIMIT = 12288


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("5m", "1m30s", "300ms") or a plain number of seconds."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if not parts or "".join(value + unit for value, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 300s, 5m, 1m30s)")
    return sum(float(value) * _UNITS[unit] for value, unit in parts)


@dataclass(frozen=True)
class AdaptorConfig:
    socket: Path
    pods_dir: Path
    state_dir: Path
    owner: str
    proxy_timeout_s: float
    forwarder_port: int
    initdata: str
    tls_min_version: str
    auth_json: str
    enable_scratch_space: bool
    probe_port: int = 8000

    @classmethod
    def from_values(cls, values: Mapping[str, SettingValue | None]) -> AdaptorConfig:
        """Check everything now, so a bad setting stops the start, not the first pod."""
        problems: list[str] = []
        state_dir = Path(str(values["state_dir"]))
        try:
            proxy_timeout = parse_duration(str(values["proxy_timeout"]))
        except ValueError as exc:
            problems.append(f"PROXY_TIMEOUT: {exc}")
            proxy_timeout = 0.0
        initdata = str(values["initdata"] or "")
        if initdata:
            try:
                decode_initdata(initdata)
            except InitDataError as exc:
                problems.append(f"INITDATA: {exc}")
        if values["tls_min_version"] not in ("VersionTLS12", "VersionTLS13"):
            problems.append(
                f"TLS_MIN_VERSION: {values['tls_min_version']!r} is not VersionTLS12 or VersionTLS13"
            )
        auth_json = ""
        if auth_file := str(values["auth_json_file"] or ""):
            try:
                auth_json = Path(auth_file).read_text()
            except OSError as exc:
                problems.append(f"AUTH_JSON_FILE: cannot read {auth_file}: {exc.strerror}")
            if len(auth_json) > AUTH_JSON_LIMIT:
                problems.append(
                    f"AUTH_JSON_FILE: {len(auth_json)} bytes exceeds the {AUTH_JSON_LIMIT}-byte limit"
                )
        if not 0 <= int(str(values["probe_port"])) <= 65535:
            problems.append(f"PROBE_PORT: {values['probe_port']} is not a TCP port (0-65535)")
        for key in ("socket", "pods_dir"):
            if ":" in str(values[key]) or not Path(str(values[key])).is_absolute():
                problems.append(f"{key}: must be an absolute path without ':' (the shim requires it)")
        if problems:
            raise ConfigError(problems)
        return cls(
            socket=Path(str(values["socket"])),
            pods_dir=Path(str(values["pods_dir"])),
            state_dir=state_dir,
            owner=str(values["owner"] or ""),
            proxy_timeout_s=proxy_timeout,
            forwarder_port=int(str(values["forwarder_port"])),
            initdata=initdata,
            tls_min_version=str(values["tls_min_version"]),
            auth_json=auth_json,
            enable_scratch_space=bool(values["enable_scratch_space"]),
            probe_port=int(str(values["probe_port"])),
        )

    def resolved_owner(self) -> str:
        """The configured owner, else one generated once and kept in the state dir."""
        if self.owner:
            return self.owner
        path = self.state_dir / "owner-id"
        if not path.exists():
            self.state_dir.mkdir(parents=True, exist_ok=True)
            host = re.sub(r"[^a-z0-9-]", "-", socket.gethostname().lower())[:40]
            path.write_text(f"caa-{host}-{secrets.token_hex(4)}\n")
        return path.read_text().strip()
