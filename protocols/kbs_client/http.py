"""The one place the KBS client touches HTTP: a thin aiohttp wrapper that bounds response sizes,
maps transport failures to `KbsConnectionError`, and turns error responses into typed errors built
from upstream's `ErrorInformation` JSON."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie

import aiohttp

from protocols.kbs import API_PREFIX, KbsProtocolError, parse_error
from protocols.kbs_client.errors import (
    KbsConnectionError,
    KbsHttpError,
    KbsResponseError,
    KbsUnauthorized,
    ResourceNotFound,
)

DEFAULT_TIMEOUT = 60.0
MAX_RESPONSE_BYTES = 64 * 1024 * 1024
_ERROR_DETAIL_CHARS = 500


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    body: bytes
    set_cookies: tuple[str, ...] = field(default=())

    def cookie(self, name: str) -> str | None:
        """The value a `Set-Cookie` header gives `name` (the last one wins), if any."""
        value = None
        for header in self.set_cookies:
            jar: SimpleCookie = SimpleCookie()
            try:
                jar.load(header)
            except CookieError:
                continue
            if name in jar:
                value = jar[name].value
        return value


def ssl_context(ca_pem: str | None) -> ssl.SSLContext | None:
    """A TLS context trusting `ca_pem` (kbs-client `--cert-file`, aa.toml `cert`) besides the system."""
    if ca_pem is None:
        return None
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cadata=ca_pem)
    except (ssl.SSLError, ValueError) as exc:
        raise KbsConnectionError(f"KBS certificate is not a usable PEM certificate: {exc}") from None
    return context


class KbsHttp:
    """HTTP to one KBS base URL (`http[s]://host:port`); endpoints are relative to `/kbs/v0/`."""

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        ca_pem: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise KbsConnectionError(f"KBS URL {url[:100]!r} must start with http:// or https://")
        self.base_url = url.rstrip("/")
        self._session = session
        self._owns_session = session is None
        self._ssl = ssl_context(ca_pem)
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def url(self, endpoint: str) -> str:
        return f"{self.base_url}{API_PREFIX}/{endpoint}"

    async def request(
        self,
        method: str,
        endpoint: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpResponse:
        if self._session is None:
            # Cookies are handled explicitly (the session id is per client, not per host).
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        try:
            async with self._session.request(
                method,
                self.url(endpoint),
                data=body,
                headers=dict(headers or {}),
                ssl=self._ssl if self._ssl is not None else True,
                timeout=self._timeout,
                allow_redirects=False,
            ) as resp:
                data = await _read_bounded(resp)
                return HttpResponse(
                    status=resp.status, body=data, set_cookies=tuple(resp.headers.getall("Set-Cookie", ()))
                )
        except TimeoutError:
            raise KbsConnectionError(
                f"KBS {self.base_url} did not answer {method} {endpoint} in time"
            ) from None
        except aiohttp.ClientError as exc:
            raise KbsConnectionError(f"KBS {self.base_url}: {method} {endpoint} failed: {exc}") from None

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None


def raise_for_status(response: HttpResponse) -> None:
    """Nothing for 200; otherwise the typed error for the status, with the KBS's own explanation."""
    if response.status == 200:
        return
    try:
        info = parse_error(response.body)
        error_type, detail = info.variant, info.detail
    except KbsProtocolError:
        error_type, detail = "", response.body[:_ERROR_DETAIL_CHARS].decode("utf-8", errors="replace")
    detail = detail[:_ERROR_DETAIL_CHARS]
    if response.status == 401:
        raise KbsUnauthorized(response.status, error_type, detail)
    if response.status == 404:
        raise ResourceNotFound(response.status, error_type, detail)
    raise KbsHttpError(response.status, error_type, detail)


async def _read_bounded(resp: aiohttp.ClientResponse) -> bytes:
    if resp.content_length is not None and resp.content_length > MAX_RESPONSE_BYTES:
        raise KbsResponseError(f"KBS response of {resp.content_length} bytes exceeds {MAX_RESPONSE_BYTES}")
    data = await resp.content.read(MAX_RESPONSE_BYTES + 1)
    while len(data) <= MAX_RESPONSE_BYTES:
        chunk = await resp.content.read(MAX_RESPONSE_BYTES + 1 - len(data))
        if not chunk:
            return data
        data += chunk
    raise KbsResponseError(f"KBS response exceeds {MAX_RESPONSE_BYTES} bytes")
