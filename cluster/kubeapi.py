"""A small asyncio client for the Kubernetes REST API, on aiohttp (already a dependency of every command).

Why not kubernetes_asyncio: the adaptor, the webhook and the controller need a dozen calls (get,
create, JSON/merge patch, delete, list, watch) on four resource types, one of them a custom
resource the generated client does not know anyway; its 30 MB of generated models would be the
largest dependency of the adaptor for that. Configuration follows client-go: in-cluster (service
account token, re-read as the kubelet rotates it) or a kubeconfig file (KUBECONFIG).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import yaml

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S = 60.0  # client-go re-reads a projected token file at most once a minute
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
Json = dict[str, Any]


class KubeConfigError(ValueError):
    """No usable cluster configuration."""


class ApiError(Exception):
    """The API server refused a call; `status` is the HTTP status, `reason` Kubernetes' (NotFound...)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


@dataclass
class KubeConfig:
    server: str
    ca_pem: str = ""
    token: str = ""
    token_file: str = ""
    client_cert_pem: str = ""
    client_key_pem: str = field(default="", repr=False)
    namespace: str = "default"
    insecure: bool = False

    @classmethod
    def in_cluster(cls, account: Path = SERVICE_ACCOUNT, env: Mapping[str, str] = os.environ) -> KubeConfig:
        host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
        if not host or not port:
            raise KubeConfigError(
                "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set, KUBECONFIG neither"
            )
        try:
            ca = (account / "ca.crt").read_text()
            namespace = (account / "namespace").read_text().strip()
        except OSError as exc:
            raise KubeConfigError(
                f"cannot read the service account's {exc.filename}: {exc.strerror}"
            ) from None
        host = f"[{host}]" if ":" in host else host
        return cls(f"https://{host}:{port}", ca, token_file=str(account / "token"), namespace=namespace)

    @classmethod
    def from_file(cls, path: Path) -> KubeConfig:
        """The current context of a kubeconfig file; inline data or files, token or client certificate."""
        try:
            document = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise KubeConfigError(f"cannot read kubeconfig {path}: {exc}") from None
        try:
            context = _named(document, "contexts", document["current-context"])["context"]
            cluster = _named(document, "clusters", context["cluster"])["cluster"]
            user = _named(document, "users", context["user"])["user"] or {}
        except (KeyError, TypeError) as exc:
            raise KubeConfigError(f"kubeconfig {path}: no usable current context ({exc})") from None
        base = path.parent
        return cls(
            server=str(cluster["server"]).rstrip("/"),
            ca_pem=_inline_or_file(cluster, "certificate-authority", base),
            token=str(user.get("token", "")),
            token_file=str(base / user["tokenFile"]) if user.get("tokenFile") else "",
            client_cert_pem=_inline_or_file(user, "client-certificate", base),
            client_key_pem=_inline_or_file(user, "client-key", base),
            namespace=str(context.get("namespace") or "default"),
            insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
        )

    @classmethod
    def load(cls, env: Mapping[str, str] = os.environ) -> KubeConfig:
        """KUBECONFIG (first file) when set, else in-cluster, as client-go's default loading."""
        if path := env.get("KUBECONFIG", "").split(os.pathsep)[0]:
            return cls.from_file(Path(path))
        return cls.in_cluster(env=env)

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cadata=self.ca_pem or None)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert_pem:
            _load_client_pair(context, self.client_cert_pem, self.client_key_pem)
        return context


def _named(document: Mapping[str, Any], section: str, name: str) -> Mapping[str, Any]:
    for entry in document[section]:
        if entry["name"] == name:
            return entry  # type: ignore[no-any-return]
    raise KeyError(f"{section} has no {name!r}")


def _inline_or_file(section: Mapping[str, Any], key: str, base: Path) -> str:
    if data := section.get(f"{key}-data"):
        try:
            return base64.b64decode(str(data), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise KubeConfigError(f"kubeconfig {key}-data is not base64 PEM") from None
    if file := section.get(key):
        try:
            return (base / str(file)).read_text()
        except OSError as exc:
            raise KubeConfigError(f"kubeconfig {key} {file}: {exc.strerror}") from None
    return ""


def _load_client_pair(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """ssl loads keys from files only: through a private temporary file, removed at once."""
    directory = "/dev/shm" if Path("/dev/shm").is_dir() else None
    fd, name = tempfile.mkstemp(prefix="peerpods-kube-", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(cert_pem.rstrip("\n") + "\n" + key_pem)
        context.load_cert_chain(name)
    except ssl.SSLError as exc:
        raise KubeConfigError(f"cannot load the kubeconfig client certificate: {exc}") from None
    finally:
        Path(name).unlink(missing_ok=True)


class KubeClient:
    """One connection pool to one API server. Paths are API paths (`/api/v1/namespaces/x/pods/y`)."""

    def __init__(self, config: KubeConfig, timeout_s: float = 30.0) -> None:
        self.config = config
        self._ssl = config.ssl_context()
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._token = config.token
        self._token_read = 0.0

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl, limit=64)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        return self._session

    def _headers(self, content_type: str | None = None) -> dict[str, str]:
        if self.config.token_file and time.monotonic() - self._token_read > TOKEN_REREAD_S:
            try:
                self._token = Path(self.config.token_file).read_text().strip()
            except OSError as exc:
                raise KubeConfigError(f"cannot read token file {exc.filename}: {exc.strerror}") from None
            self._token_read = time.monotonic()
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        body: object = None,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> Json:
        data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
        headers = self._headers(content_type if data is not None else None)
        async with self._http().request(
            method, self.config.server + path, data=data, headers=headers, params=params
        ) as reply:
            text = await reply.text()
            if reply.status >= 400:
                raise _api_error(reply.status, text)
            return json.loads(text) if text else {}

    async def request_text(self, path: str) -> str:
        """A non-JSON endpoint (e.g. /metrics) as text."""
        async with self._http().get(self.config.server + path, headers=self._headers()) as reply:
            text = await reply.text()
            if reply.status >= 400:
                raise _api_error(reply.status, text)
            return text

    async def get(self, path: str) -> Json:
        return await self.request("GET", path)

    async def create(self, path: str, body: Json) -> Json:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: object, content_type: str = MERGE_PATCH) -> Json:
        return await self.request("PATCH", path, body, content_type)

    async def apply(self, path: str, body: Json, manager: str) -> Json:
        """Server-side apply, schema-checked (unknown or duplicate fields are errors), taking fields over."""
        params = {"fieldManager": manager, "force": "true", "fieldValidation": "Strict"}
        return await self.request("PATCH", path, body, APPLY_PATCH, params)

    async def delete(self, path: str, body: Json | None = None) -> Json:
        return await self.request("DELETE", path, body)

    async def list(self, path: str, params: Mapping[str, str] | None = None) -> Json:
        return await self.request("GET", path, params=params)

    async def watch(
        self, path: str, resource_version: str, params: Mapping[str, str] | None = None, timeout_s: int = 300
    ) -> AsyncIterator[Json]:
        """Watch events ({"type", "object"}) after `resource_version`, until the server ends the watch.

        An ERROR event with 410 Gone means the version is too old: the caller lists again.
        """
        query = {**(params or {}), "watch": "true", "resourceVersion": resource_version,
                 "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_s)}  # fmt: skip
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=timeout_s + 30)
        async with self._http().get(
            self.config.server + path, headers=self._headers(), params=query, timeout=timeout
        ) as reply:
            if reply.status >= 400:
                raise _api_error(reply.status, await reply.text())
            async for line in reply.content:
                if line.strip():
                    yield json.loads(line)


def _api_error(status: int, text: str) -> ApiError:
    try:
        document = json.loads(text)
        return ApiError(status, str(document.get("reason", "")), str(document.get("message", ""))[:500])
    except (ValueError, AttributeError):
        return ApiError(status, "", " ".join(text.split())[:200])


def path_segment(name: str) -> str:
    """A name as one URL path segment."""
    return quote(name, safe="")
