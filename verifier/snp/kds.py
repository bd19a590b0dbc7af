"""AMD Key Distribution Service client: the SNP verifier's only network I/O, injected as a VCEK source.

URL as AMD and upstream build it: `{base}/vcek/v1/{Milan|Genoa|Turin}/{hwid}?blSPL=NN&teeSPL=NN&snpSPL=NN
&ucodeSPL=NN` (Turin: 8-byte hwid and `fmcSPL=NN` first), values zero-padded to two digits. KDS
rate-limits hard (HTTP 429), so transient failures are retried with exponential backoff that honours
`Retry-After`. Blocking on purpose: `evaluate` is synchronous CPU work that async callers run in a
worker thread, and only a cache miss ever gets here.
"""

from __future__ import annotations

import email.utils
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import tenacity

from verifier.snp.report import Generation
from verifier.snp.vcek import MAX_VCEK_SIZE, VcekKey, VcekUnavailable

KDS_BASE_URL = "https://kdsintf.amd.com"
_RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})


class _Transient(Exception):
    """A failure worth retrying; `retry_after` is the server's requested delay in seconds, if any."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def vcek_url(base_url: str, key: VcekKey) -> str:
    tcb = key.tcb
    params = f"blSPL={tcb.bootloader:02}&teeSPL={tcb.tee:02}&snpSPL={tcb.snp:02}&ucodeSPL={tcb.microcode:02}"
    if key.generation is Generation.TURIN:
        if tcb.fmc is None:
            raise VcekUnavailable("a Turin VCEK request needs the FMC level")
        params = f"fmcSPL={tcb.fmc:02}&{params}"
    return f"{base_url.rstrip('/')}/vcek/v1/{key.generation.value}/{key.hwid}?{params}"


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None when absent or unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class KdsFetcher:
    """Fetches VCEKs from AMD KDS (or a mirror/fake at `base_url`)."""

    def __init__(
        self,
        base_url: str = KDS_BASE_URL,
        *,
        timeout: float = 10.0,
        attempts: int = 5,
        initial_backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"KDS base URL must be http(s): {base_url!r}")
        self.base_url = base_url
        self._timeout = timeout
        self._attempts = attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._sleep = sleep

    def fetch(self, key: VcekKey) -> bytes:
        if not any(key.chip_id):
            raise VcekUnavailable(
                "the chip id is zero (MASK_CHIP_ID): KDS cannot be asked, the evidence must carry the VCEK"
            )
        url = vcek_url(self.base_url, key)
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self._attempts),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Transient),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(self._get, url)
        except _Transient as exc:
            raise VcekUnavailable(f"KDS kept failing after {self._attempts} attempts: {exc}") from None

    def _wait(self, state: tenacity.RetryCallState) -> float:
        backoff = self._initial_backoff * 2.0 ** (state.attempt_number - 1)
        error = state.outcome.exception() if state.outcome is not None else None
        if isinstance(error, _Transient) and error.retry_after is not None:
            backoff = error.retry_after
        return min(backoff, self._max_backoff)

    def _get(self, url: str) -> bytes:
        try:
            with urllib.request.urlopen(url, timeout=self._timeout) as response:  # noqa: S310 (http(s) only)
                body: bytes = response.read(MAX_VCEK_SIZE + 1)
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the connection
            if exc.code in _RETRIED_STATUSES:
                retry_after = parse_retry_after(exc.headers.get("Retry-After"))
                raise _Transient(f"HTTP {exc.code} from {url}", retry_after) from None
            raise VcekUnavailable(f"KDS answered HTTP {exc.code} for {url}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise _Transient(f"{url}: {exc}") from None
        if len(body) > MAX_VCEK_SIZE:
            raise VcekUnavailable(f"KDS answer for {url} is larger than {MAX_VCEK_SIZE} bytes")
        return body
