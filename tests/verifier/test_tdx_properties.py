"""Property tests: whatever bytes reach a TDX parser, the only exception is `VerificationError`, and the
verifier accepts no quote whose signed parts differ from the genuine one (by region: test_verdicts_tdx)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier import tdx_builder as b
from tests.verifier.verdicts import tdx_signed_parts
from verifier.dcap.collateral import parse_qe_identity, parse_tcb_info, split_document
from verifier.dcap.evidence import QuoteDecoder
from verifier.dcap.pck import parse_sgx_extension
from verifier.dcap.sources import crl_der, parse_pcs_client_tool
from verifier.dcap.store import load_collateral
from verifier.errors import VerificationError
from verifier.tdx import RawCollateral, TdxVerifier
from verifier.tdx.eventlog import event_claims, parse_ccel, replay
from verifier.tdx.quote import parse_quote
from verifier.tdx.verifier import parse_evidence

PKI = b.make_pki()
QUOTE = b.make_quote(PKI, b.QuoteSpec(version=5, body_type=3))
EXTENSION = b.sgx_extension()
CCEL, _ = b.make_ccel(b.DEFAULT_EVENTS, padding=16)
RAW = b.collateral(PKI)
VERIFIER = TdxVerifier(source=None, root=PKI.root, clock=lambda: b.NOW)
VERIFIER.add_collateral(RAW)
FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def only_verification_errors(call: Callable[[], Any]) -> None:
    with contextlib.suppress(VerificationError):
        call()


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in edits:
        out[position % len(out)] = value
    return bytes(out)


edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4)


@FAST
@given(st.binary(max_size=2000))
def test_random_bytes_as_quote(data: bytes) -> None:
    only_verification_errors(lambda: parse_quote(data))
    with pytest.raises(VerificationError):
        VERIFIER.verify_quote(data)


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
@given(st.binary(min_size=1, max_size=200))
def test_oversized_quote_is_malformed_unless_zero_padded(extra: bytes) -> None:
    if any(extra):
        with pytest.raises(VerificationError) as info:
            parse_quote(QUOTE + extra)
        assert info.value.reason == "malformed_evidence"
    else:
        assert tdx_signed_parts(QUOTE + extra, PKI.root) == tdx_signed_parts(QUOTE, PKI.root)


@FAST
@given(edits)
def test_mutated_quote_is_refused_unless_its_signed_parts_stay(changes: list[tuple[int, int]]) -> None:
    quote = mutate(QUOTE, changes)
    try:
        VERIFIER.verify_quote(quote)
    except VerificationError:
        return
    assert tdx_signed_parts(quote, PKI.root) == tdx_signed_parts(QUOTE, PKI.root)


@FAST
@given(st.binary(max_size=600))
def test_random_sgx_extension(data: bytes) -> None:
    only_verification_errors(lambda: parse_sgx_extension(data))


@FAST
@given(edits, st.integers(min_value=0, max_value=len(EXTENSION)))
def test_mutated_or_truncated_sgx_extension(changes: list[tuple[int, int]], cut: int) -> None:
    only_verification_errors(lambda: parse_sgx_extension(mutate(EXTENSION, changes)))
    only_verification_errors(lambda: parse_sgx_extension(EXTENSION[:cut]))


@FAST
@given(st.binary(max_size=400))
def test_random_ccel(data: bytes) -> None:
    only_verification_errors(lambda: event_claims(parse_ccel(data)))
    only_verification_errors(lambda: replay(parse_ccel(data)))


@FAST
@given(edits, st.integers(min_value=0, max_value=len(CCEL)))
def test_mutated_or_truncated_ccel(changes: list[tuple[int, int]], cut: int) -> None:
    for data in (mutate(CCEL, changes), CCEL[:cut]):
        only_verification_errors(lambda: replay(parse_ccel(data)))  # noqa: B023 (called at once)
        only_verification_errors(lambda: event_claims(parse_ccel(data)))  # noqa: B023


@FAST
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_random_evidence_document(data: bytes) -> None:
    only_verification_errors(lambda: parse_evidence(data))
    with pytest.raises(VerificationError):
        VERIFIER.evaluate(data, b"")


def _documents() -> dict[str, Any]:
    return {
        "tcbInfo": json.loads(RAW.tcb_info)["tcbInfo"],
        "enclaveIdentity": json.loads(RAW.qe_identity)["enclaveIdentity"],
    }


def _replace_somewhere(value: Any, path: list[int], new: Any) -> Any:
    """`value` with the node that `path` picks (modulo each container's size) replaced by `new`."""
    if not path or not isinstance(value, dict | list) or not value:
        return new
    if isinstance(value, dict):
        key = list(value)[path[0] % len(value)]
        return {**value, key: _replace_somewhere(value[key], path[1:], new)}
    index = path[0] % len(value)
    return [*value[:index], _replace_somewhere(value[index], path[1:], new), *value[index + 1 :]]


@FAST
@given(st.sampled_from(["tcbInfo", "enclaveIdentity"]), st.lists(st.integers(0, 50), max_size=5), json_values)
def test_collateral_with_a_field_replaced(kind: str, path: list[int], new: Any) -> None:
    inner = _replace_somewhere(_documents()[kind], path, new)
    parse = parse_tcb_info if kind == "tcbInfo" else parse_qe_identity
    document = json.dumps({kind: inner, "signature": "00" * 64}).encode()
    only_verification_errors(lambda: parse(split_document(document, kind)[0]))


@FAST
@given(st.binary(max_size=300))
def test_random_collateral_bytes(data: bytes) -> None:
    only_verification_errors(lambda: split_document(data, "tcbInfo"))
    only_verification_errors(lambda: crl_der(data))
    raw = RawCollateral(tcb_info=data, qe_identity=RAW.qe_identity)
    only_verification_errors(lambda: load_collateral(raw, PKI.root, b.NOW))


@FAST
@given(edits)
def test_mutated_collateral_bundle(changes: list[tuple[int, int]]) -> None:
    for field in ("tcb_info_issuer_chain", "pck_crl", "root_ca_crl", "pck_crl_issuer_chain"):
        original = getattr(RAW, field)
        raw = dataclasses.replace(RAW, **{field: mutate(original, changes)})
        only_verification_errors(lambda: load_collateral(raw, PKI.root, b.NOW))  # noqa: B023


@FAST
@given(json_values)
def test_random_pcs_client_tool_file(value: Any) -> None:
    data = json.dumps({"collaterals": value}).encode()
    only_verification_errors(lambda: parse_pcs_client_tool(data, b.FMSPC, "platform"))


B64_EDIT_CHARS = "A/+=\n -_."
base64_texts = st.builds(
    lambda data, edits: _edit(base64.b64encode(data).decode(), edits),
    st.binary(min_size=700, max_size=1000),
    st.lists(st.tuples(st.integers(min_value=0), st.sampled_from(B64_EDIT_CHARS), st.booleans()), max_size=3),
)


def _edit(text: str, edits: list[tuple[int, str, bool]]) -> str:
    for position, char, insert in edits:
        index = position % (len(text) + 1)
        text = text[:index] + char + text[index + (0 if insert else 1) :]
    return text


@FAST
@given(base64_texts)
def test_memoized_quote_decoding_is_a_strict_one_piece_decode(text: str) -> None:
    decoder = QuoteDecoder()
    try:
        expected: bytes | None = binascii.a2b_base64(text, strict_mode=True)
    except binascii.Error:
        expected = None
    for _ in range(2):  # fresh, then from the memo
        try:
            got: bytes | None = decoder(text, "quote")
        except VerificationError as exc:
            assert exc.reason == "malformed_evidence"
            got = None
        assert got == expected
