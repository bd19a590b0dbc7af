"""The interface the broker uses for its attestation service, and its two errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from kbs.jwt import PublicKey
from verifier.service import VerificationRequest


class AttestationRefused(Exception):
    """The service refused the evidence, policy or reference value; the message says why."""


class AttestationUnavailable(Exception):
    """The service (or the storage it reads) cannot be reached for now: a 503, retried later."""


class AttestationBackend(Protocol):
    async def start(self) -> None:
        """Before the first request (the event loop runs)."""
        ...

    async def close(self) -> None: ...

    def own_keys(self) -> Sequence[PublicKey]:
        """Token signing keys the KBS trusts without configuration (its built-in service's)."""
        ...

    async def evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str]) -> str:
        """The EAR token for the requests' evidence."""
        ...

    async def set_policy(self, policy_id: str, policy: str) -> None: ...

    async def register_reference_value(self, message: bytes) -> None: ...

    async def query_reference_value(self, name: str) -> Any | None:
        """The value, None when none is registered."""
        ...
