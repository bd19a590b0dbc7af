"""The shape every TEE verifier has: evidence and expected bindings in, claims out.

Claims are plain JSON-able dicts (as upstream Trustee), so policy stays outside the code.
"""

from __future__ import annotations

from typing import Any, Protocol

Claims = dict[str, Any]


class Verifier(Protocol):
    """One TEE. `evaluate` raises `VerificationError` (only) when the evidence is not accepted.

    `evidence` is the TEE's evidence document as a guest sends it in the KBS `/attest` body
    (`tee-evidence`, upstream's JSON shapes). `expected_report_data` is what the hardware report must
    carry (padded by the verifier as upstream); `expected_init_data_hash`, when given, is the init
    data digest the report must carry. Verification is CPU work over bytes: collateral (VCEKs, TCB
    info) comes from injected caches and stores, never from ad-hoc network calls in here.
    """

    tee: str

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims: ...
