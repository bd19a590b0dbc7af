"""The adaptor's own settings (upstream names), and parsing of Go-style durations like "5m"."""

from __future__ import annotations

import math
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from adaptor.netsettings import SETTINGS as POD_NETWORK_SETTINGS
from adaptor.netsettings import PodNetworkConfig, parse_pod_network
from adaptor.tunnel.authority import CustomPKI, read_custom_pki
from protocols.initdata import InitDataError, decode_initdata
from protocols.ttrpc.server import FRAME_DEADLINE_S
from protocols.tunnel_tls import TunnelTLSError, check_tls_profile
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
    Setting("tls-cipher-suites", "TLS_CIPHER_SUITES", kind=list, default=[],
            help="IANA names of the TLS 1.2 cipher suites for the agent tunnel, comma separated"),
    Setting("ca-cert-file", "CACERT_FILE", default="",
            help="custom TLS: CA of the pod VMs' own server certificates (e.g. /etc/certificates/ca.crt)"),
    Setting("cert-file", "CERT_FILE", default="",
            help="custom TLS: the adaptor's client certificate (e.g. /etc/certificates/client.crt)"),
    Setting("cert-key", "CERT_KEY", default="",
            help="custom TLS: the adaptor's client key (e.g. /etc/certificates/client.key)"),
    Setting("tls-skip-verify", "TLS_SKIP_VERIFY", kind=bool, default=False,
            help="refused if true: pod VM certificates are always verified"),
    Setting("disable-tls", None, kind=bool, default=False,
            help="refused if true: the agent tunnel is always mutual TLS"),
    Setting("pause-image", "PAUSE_IMAGE", default="",
            help="unused, as upstream: the pause image is part of the pod VM image"),
    Setting("cloud-config-verify", "CLOUD_CONFIG_VERIFY", kind=bool, default=False,
            help="the cloud settings are checked at every start whatever this says"),
    Setting("peerpods-limit-per-node", "PEERPODS_LIMIT_PER_NODE", kind=int, default=10,
            help="node capacity kata.peerpods.io/vm (0: unlimited; negative: not advertised)"),
    *POD_NETWORK_SETTINGS,
    Setting("auth-json-file", "AUTH_JSON_FILE", default="",
            help="registry credentials (containers auth.json) sent to every pod VM"),
    Setting("enable-scratch-space", "ENABLE_SCRATCH_SPACE", kind=bool, default=False,
            help="ask pod VMs to encrypt a scratch disk for image layers"),
    Setting("scratch-space-size", "SCRATCH_SPACE_SIZE", kind=int, default=10,
            help="GiB of the scratch disk attached to each pod VM with ENABLE_SCRATCH_SPACE"),
    Setting("probe-port", "PROBE_PORT", kind=int, default=8000,
            help="port on 127.0.0.1 for /startup, /healthz and /metrics (0: none)"),
    Setting("frame-deadline", "PEERPODS_FRAME_DEADLINE", default="30s",
            help="drop a hypervisor socket connection whose ttrpc frame is still incomplete after this"),
]  # fmt: skip

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
AUTH_JSON_LIMIT = 12288


def parse_duration(text: str) -> float:
    """Seconds from a Go duration ("5m", "1m30s", "300ms") or a plain number of seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _DURATION.findall(text)
    if not parts or "".join(value + unit for value, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r} (use e.g. 300s, 5m, 1m30s)")
    return sum(float(value) * _UNITS[unit] for value, unit in parts)


def _tunnel_tls(
    values: Mapping[str, SettingValue | None], problems: list[str]
) -> tuple[tuple[str, ...], CustomPKI]:
    """The tunnel's TLS settings. The two switches that would take its protection away are refused.

    `-disable-tls` would hand the Kata agent API (exec into any container) to anyone who can reach
    a pod VM, and pod VM images only serve TLS. `-tls-skip-verify` could never work upstream either:
    there is always a CA (generated or CACERT_FILE), and upstream refuses a CA with skip-verify.
    """
    suites = values["tls_cipher_suites"]
    cipher_suites = tuple(suites) if isinstance(suites, list) else ()
    try:
        check_tls_profile(str(values["tls_min_version"]), cipher_suites)
    except TunnelTLSError as exc:
        problems.append(f"TLS_MIN_VERSION / TLS_CIPHER_SUITES: {exc}")
    if values["disable_tls"] is True:
        problems.append(
            "-disable-tls is refused: the agent tunnel carries the Kata agent API, which must never be "
            "open to the network (pod VMs only accept mutual TLS; certificates are generated for you)"
        )
    if values["tls_skip_verify"] is True:
        problems.append(
            "-tls-skip-verify (TLS_SKIP_VERIFY) is refused: pod VM certificates are always verified "
            "against the tunnel CA (generated, or -ca-cert-file); upstream refuses a CA with it too"
        )
    pki, pki_problems = read_custom_pki(
        str(values["ca_cert_file"] or ""), str(values["cert_file"] or ""), str(values["cert_key"] or "")
    )
    problems.extend(pki_problems)
    return cipher_suites, pki


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
    scratch_space_gib: int = 10
    tls_cipher_suites: tuple[str, ...] = ()
    tunnel_pki: CustomPKI = field(default_factory=CustomPKI)
    pod_network: PodNetworkConfig = field(default_factory=PodNetworkConfig)
    pause_image: str = ""
    peerpods_limit_per_node: int = 10
    frame_deadline_s: float = FRAME_DEADLINE_S

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
        try:
            frame_deadline = parse_duration(str(values["frame_deadline"]))
        except ValueError as exc:
            problems.append(f"PEERPODS_FRAME_DEADLINE: {exc}")
            frame_deadline = FRAME_DEADLINE_S
        if not 0 < frame_deadline < math.inf:
            problems.append(
                f"PEERPODS_FRAME_DEADLINE: {values['frame_deadline']!r} is not a positive duration"
            )
        initdata = str(values["initdata"] or "")
        if initdata:
            try:
                decode_initdata(initdata)
            except InitDataError as exc:
                problems.append(f"INITDATA: {exc}")
        cipher_suites, tunnel_pki = _tunnel_tls(values, problems)
        pod_network = parse_pod_network(values, problems)
        if not 1 <= int(str(values["forwarder_port"])) <= 65535:
            problems.append(f"FORWARDER_PORT: {values['forwarder_port']} is not a TCP port (1-65535)")
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
        scratch_gib = int(str(values["scratch_space_size"]))
        if not 1 <= scratch_gib <= 16384:
            problems.append(f"SCRATCH_SPACE_SIZE: {scratch_gib} is not a disk size in GiB (1-16384)")
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
            scratch_space_gib=scratch_gib,
            probe_port=int(str(values["probe_port"])),
            tls_cipher_suites=cipher_suites,
            tunnel_pki=tunnel_pki,
            pod_network=pod_network,
            pause_image=str(values["pause_image"] or ""),
            peerpods_limit_per_node=int(str(values["peerpods_limit_per_node"])),
            frame_deadline_s=frame_deadline,
        )

    def not_implemented(self) -> list[str]:
        """Settings given a value that has no effect here (yet): said at start, never silently ignored."""
        notes = self.pod_network.not_implemented()
        if self.pause_image:
            notes.append("PAUSE_IMAGE is unused, as upstream: the pause image is part of the pod VM image")
        return notes

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
