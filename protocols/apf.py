"""apf.json: the forwarder's configuration, written by the adaptor into the user data, read in the pod VM.

Key names are upstream's (`forwarder.Config`), so images built for upstream read ours and back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_CONFIG_PATH = "/run/peerpod/apf.json"


class ForwarderConfigError(ValueError):
    """apf.json is missing, unreadable, or lacks what TLS needs."""


@dataclass(frozen=True)
class ForwarderConfig:
    tls_server_cert: str = ""
    tls_server_key: str = field(default="", repr=False)
    tls_client_ca: str = ""
    tls_min_version: str = ""
    tls_cipher_suites: tuple[str, ...] = ()
    pod_namespace: str = ""
    pod_name: str = ""
    pod_network: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        document: dict[str, Any] = {
            "pod-network": self.pod_network,
            "pod-namespace": self.pod_namespace,
            "pod-name": self.pod_name,
            "tls-server-key": self.tls_server_key,
            "tls-server-cert": self.tls_server_cert,
            "tls-client-ca": self.tls_client_ca,
        }
        if self.tls_min_version:
            document["tls-min-version"] = self.tls_min_version
        if self.tls_cipher_suites:
            document["tls-cipher-suites"] = list(self.tls_cipher_suites)
        return json.dumps(document, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ForwarderConfig:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ForwarderConfigError(f"apf.json is not JSON: {exc}") from None
        except RecursionError:
            raise ForwarderConfigError("apf.json is nested too deeply") from None
        if not isinstance(document, dict):
            raise ForwarderConfigError("apf.json must hold a JSON object")

        def text_field(key: str) -> str:
            value = document.get(key) or ""
            if not isinstance(value, str):
                raise ForwarderConfigError(f"apf.json: {key!r} must be a string")
            return value

        suites = document.get("tls-cipher-suites") or []
        network = document.get("pod-network") or {}
        if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
            raise ForwarderConfigError("apf.json: 'tls-cipher-suites' must be a list of strings")
        if not isinstance(network, dict):
            raise ForwarderConfigError("apf.json: 'pod-network' must be an object")
        return cls(
            tls_server_cert=text_field("tls-server-cert"),
            tls_server_key=text_field("tls-server-key"),
            tls_client_ca=text_field("tls-client-ca"),
            tls_min_version=text_field("tls-min-version"),
            tls_cipher_suites=tuple(suites),
            pod_namespace=text_field("pod-namespace"),
            pod_name=text_field("pod-name"),
            pod_network=network,
        )

    @classmethod
    def load(cls, path: Path) -> ForwarderConfig:
        try:
            return cls.from_json(path.read_text())
        except OSError as exc:
            raise ForwarderConfigError(f"cannot read {path}: {exc.strerror}") from None
