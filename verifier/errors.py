"""The one error type every verifier raises: anything else escaping a verifier is a bug."""

from __future__ import annotations


class VerificationError(Exception):
    """Evidence was not accepted. `reason` is a stable code (e.g. "report_data_mismatch") for tests,
    logs and API clients; the message says what was expected and what was found."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class EvidenceFormatError(VerificationError):
    """The evidence could not be parsed (truncated, oversized, wrong encoding or shape)."""

    def __init__(self, message: str) -> None:
        super().__init__("malformed_evidence", message)
