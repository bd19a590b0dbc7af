"""Fetch and parse user data, retrying at a fixed delay until a deadline.

Upstream retries both fetch and parse failures: the metadata service may answer before the
user data is attached, or with a partial document.
"""

from __future__ import annotations

import logging
import time

from podvm.userdata.errors import FetchError, UserDataTimeout
from podvm.userdata.sources import UserDataSource
from protocols.cloudconfig import CloudConfigError, WriteFile, parse_cloud_config

log = logging.getLogger(__name__)

DEFAULT_FETCH_TIMEOUT = 180.0
DEFAULT_RETRY_DELAY = 5.0
# Bounds for a single request: long enough for a slow IMDS, short enough to leave room to retry.
MAX_REQUEST_TIMEOUT = 10.0
MIN_REQUEST_TIMEOUT = 1.0


def retrieve_cloud_config(
    source: UserDataSource,
    fetch_timeout: float = DEFAULT_FETCH_TIMEOUT,
    retry_delay: float = DEFAULT_RETRY_DELAY,
) -> list[WriteFile]:
    """The parsed `write_files` from `source`, or UserDataTimeout with the last failure."""
    deadline = time.monotonic() + fetch_timeout
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            files = parse_cloud_config(
                source.fetch(min(MAX_REQUEST_TIMEOUT, max(remaining, MIN_REQUEST_TIMEOUT)))
            )
        except (FetchError, CloudConfigError) as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise UserDataTimeout(
                    f"no usable user data from {source.name} within {fetch_timeout:g}s "
                    f"({attempt} attempts); last error: {exc}"
                ) from None
            log.warning("attempt %d to get user data from %s failed: %s", attempt, source.name, exc)
            time.sleep(min(retry_delay, remaining))
            continue
        log.info("got user data from %s (attempt %d, %d files)", source.name, attempt, len(files))
        return files
