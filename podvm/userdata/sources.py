"""Where a pod VM reads its user data: a NoCloud config drive or the cloud's metadata service.

Each source makes one attempt per `fetch` call; retrying is the caller's job. URLs and headers
follow upstream `pkg/userdata` (AWS IMDSv2 with fallback to v1, Azure IMDS userData, GCP metadata
attribute). Plain urllib is enough for a oneshot; proxies from the environment and redirects are
ignored so that the metadata headers only ever reach the configured endpoint. urllib.request (with
http.client, email and ssl) is imported only when a metadata service is asked: on a config drive it
would be most of the start-up time of `process-user-data` in an emulated VM.
"""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from podvm.userdata.errors import FetchError, SourceConfigError
from protocols.cloudconfig import MAX_USER_DATA_BYTES

if TYPE_CHECKING:
    import urllib.request

log = logging.getLogger(__name__)

DEFAULT_CIDATA_DIR = "/media/cidata"
USER_DATA_FILENAME = "user-data"
AWS_IMDS_URL = "http://169.254.169.254"
AZURE_IMDS_URL = "http://169.254.169.254"
GCP_METADATA_URL = "http://metadata.google.internal"

AWS_TOKEN_PATH = "/latest/api/token"  # noqa: S105 (a name, not a secret)
AWS_USER_DATA_PATH = "/latest/user-data"
AWS_TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"  # noqa: S105 (a name, not a secret)
AWS_TOKEN_HEADER = "X-aws-ec2-metadata-token"  # noqa: S105 (a name, not a secret)
AWS_TOKEN_TTL_SECONDS = "60"  # noqa: S105 (a name, not a secret)
AWS_TOKEN_TIMEOUT = 5.0
AZURE_USER_DATA_PATH = "/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
GCP_USER_DATA_PATH = "/computeMetadata/v1/instance/attributes/user-data"

# Azure and GCP hand user data out base64-encoded, possibly with line breaks: room for that, so that
# every source accepts the same MAX_USER_DATA_BYTES of decoded user data.
MAX_ENCODED_USER_DATA_BYTES = 2 * MAX_USER_DATA_BYTES


class UserDataSource(Protocol):
    """One place user data can come from."""

    @property
    def name(self) -> str: ...

    def fetch(self, timeout: float) -> bytes:
        """Return the raw cloud-config bytes, or raise FetchError."""
        ...


@dataclass(frozen=True, slots=True)
class SourceSettings:
    """Locations of every source; defaults are the real ones, tests point them at fakes."""

    cidata_dir: Path = Path(DEFAULT_CIDATA_DIR)
    aws_imds_url: str = AWS_IMDS_URL
    azure_imds_url: str = AZURE_IMDS_URL
    gcp_metadata_url: str = GCP_METADATA_URL


@functools.cache
def _opener() -> urllib.request.OpenerDirector:
    """No proxies from the environment, no redirects."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    return urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def http_fetch(
    method: str, url: str, headers: dict[str, str], timeout: float, limit: int = MAX_USER_DATA_BYTES
) -> bytes:
    """One HTTP exchange; anything but a 200 with a body of at most `limit` bytes is a FetchError."""
    import http.client
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, method=method, headers=headers)  # noqa: S310 (scheme checked)
    try:
        with _opener().open(request, timeout=timeout) as response:
            status = response.status
            body: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise FetchError(f"{method} {url} returned HTTP {exc.code}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"{method} {url} failed: {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise FetchError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
    if status != 200:
        raise FetchError(f"{method} {url} returned HTTP {status}, expected 200")
    if len(body) > limit:
        raise FetchError(f"{method} {url} returned more than {limit} bytes")
    return body


def _base_url(url: str, option: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceConfigError(f"{option} must be an http(s) URL like http://169.254.169.254, got {url!r}")
    return url.rstrip("/")


def _b64decode(body: bytes, what: str) -> bytes:
    # Upstream uses Go's StdEncoding.DecodeString, which skips CR and LF but nothing else.
    try:
        data = base64.b64decode(body.replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except binascii.Error as exc:
        raise FetchError(f"{what} user data is not base64: {exc}") from None
    if len(data) > MAX_USER_DATA_BYTES:
        raise FetchError(f"{what} user data is more than {MAX_USER_DATA_BYTES} bytes")
    return data


class NoCloudSource:
    """`user-data` on a config drive (libvirt ISO labelled cidata, BYOM, local runs)."""

    name = "nocloud"

    def __init__(self, cidata_dir: Path) -> None:
        self.path = cidata_dir / USER_DATA_FILENAME

    def fetch(self, timeout: float) -> bytes:
        try:
            with self.path.open("rb") as f:
                body = f.read(MAX_USER_DATA_BYTES + 1)
        except OSError as exc:
            raise FetchError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if len(body) > MAX_USER_DATA_BYTES:
            raise FetchError(f"{self.path} is larger than {MAX_USER_DATA_BYTES} bytes")
        return body


class AwsImdsSource:
    """EC2 IMDS: session token first (IMDSv2), plain GET if the token endpoint refuses (IMDSv1)."""

    name = "aws"

    def __init__(self, base_url: str = AWS_IMDS_URL) -> None:
        self.base_url = _base_url(base_url, "--aws-imds-url")

    def fetch(self, timeout: float) -> bytes:
        headers = {}
        token = self._token(min(timeout, AWS_TOKEN_TIMEOUT))
        if token is not None:
            headers[AWS_TOKEN_HEADER] = token
        return http_fetch("GET", self.base_url + AWS_USER_DATA_PATH, headers, timeout)

    def _token(self, timeout: float) -> str | None:
        url = self.base_url + AWS_TOKEN_PATH
        try:
            raw = http_fetch("PUT", url, {AWS_TOKEN_TTL_HEADER: AWS_TOKEN_TTL_SECONDS}, timeout)
        except FetchError as exc:
            log.warning("IMDSv2 token fetch failed (%s); falling back to IMDSv1", exc)
            return None
        token = raw.decode("ascii", errors="replace")
        if not token or not token.isascii() or not token.isprintable() or token != token.strip():
            log.warning("IMDSv2 token endpoint returned an unusable token; falling back to IMDSv1")
            return None
        return token


class AzureImdsSource:
    """Azure IMDS `userData` (base64 text, needs `Metadata: true`)."""

    name = "azure"

    def __init__(self, base_url: str = AZURE_IMDS_URL) -> None:
        self.base_url = _base_url(base_url, "--azure-imds-url")

    def fetch(self, timeout: float) -> bytes:
        url = self.base_url + AZURE_USER_DATA_PATH
        body = http_fetch("GET", url, {"Metadata": "true"}, timeout, MAX_ENCODED_USER_DATA_BYTES)
        return _b64decode(body, "Azure")


class GcpMetadataSource:
    """GCE metadata attribute `user-data` (base64, as the adaptor sets `user-data-encoding`)."""

    name = "gcp"

    def __init__(self, base_url: str = GCP_METADATA_URL) -> None:
        self.base_url = _base_url(base_url, "--gcp-metadata-url")

    def fetch(self, timeout: float) -> bytes:
        url = self.base_url + GCP_USER_DATA_PATH
        body = http_fetch("GET", url, {"Metadata-Flavor": "Google"}, timeout, MAX_ENCODED_USER_DATA_BYTES)
        return _b64decode(body, "GCP")


SOURCE_NAMES = ("nocloud", "aws", "azure", "gcp")


def build_source(name: str, settings: SourceSettings) -> UserDataSource:
    """The source called `name`, located per `settings`."""
    if name == "nocloud":
        return NoCloudSource(settings.cidata_dir)
    if name == "aws":
        return AwsImdsSource(settings.aws_imds_url)
    if name == "azure":
        return AzureImdsSource(settings.azure_imds_url)
    if name == "gcp":
        return GcpMetadataSource(settings.gcp_metadata_url)
    raise SourceConfigError(f"unknown user data source {name!r}; expected one of {', '.join(SOURCE_NAMES)}")
