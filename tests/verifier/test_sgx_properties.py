"""Property tests of the SGX quote v3 parser and verifier: whatever bytes arrive, the only exception is
`VerificationError`, and no change to the signed bytes (header and enclave report) is accepted."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier import sgx_builder as b
from tests.verifier import tdx_builder as tb
from verifier.errors import VerificationError
from verifier.sgx import SgxVerifier, parse_evidence, parse_quote

PKI = tb.make_pki()
QUOTE = b.make_quote(PKI)
VERIFIER = SgxVerifier(source=None, root=PKI.root, clock=lambda: tb.NOW)
VERIFIER.add_collateral(b.collateral(PKI))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_verification_errors(call: Callable[[], Any]) -> None:
    with contextlib.suppress(VerificationError):
        call()


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    only_verification_errors(lambda: parse_quote(data))
    only_verification_errors(lambda: VERIFIER.verify_quote(data))
    only_verification_errors(lambda: parse_evidence(data))


@FAST
@given(st.integers(min_value=0, max_value=len(QUOTE) - 1))
def test_truncated_quote_is_malformed(cut: int) -> None:
    try:
        parse_quote(QUOTE[:cut])
    except VerificationError as exc:
        assert exc.reason == "malformed_evidence"
    else:
        raise AssertionError("a truncated quote parsed")


@FAST
@given(st.lists(st.tuples(st.integers(0, len(QUOTE) - 1), st.integers(0, 255)), min_size=1, max_size=4))
def test_any_edit_gives_a_typed_error_or_the_same_quote(edits: list[tuple[int, int]]) -> None:
    data = bytearray(QUOTE)
    for position, value in edits:
        data[position] = value
    try:
        verified = VERIFIER.verify_quote(bytes(data))
    except VerificationError:
        return
    # Accepted: only bytes that no check covers may have changed (PEM text that decodes alike).
    assert verified.quote.signed_data == QUOTE[: b.SIGNED_SIZE]


@FAST
@given(st.integers(0, b.SIGNED_SIZE - 1), st.integers(1, 255))
def test_any_change_to_signed_bytes_is_refused(position: int, flip: int) -> None:
    data = bytearray(QUOTE)
    data[position] ^= flip
    try:
        VERIFIER.verify_quote(bytes(data))
    except VerificationError as exc:
        assert exc.reason in {
            "bad_signature",
            "unsupported_version",
            "unsupported_quote",
            "malformed_evidence",
        }
    else:
        raise AssertionError(f"a quote with byte {position} changed was accepted")
