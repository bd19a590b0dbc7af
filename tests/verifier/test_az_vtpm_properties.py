"""Property tests: whatever reaches an Azure vTPM parser or verifier, it raises only `VerificationError`,
and the verifiers accept nothing whose signed or bound parts changed (by part: test_verdicts_vtpm)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.verifier import tdx_builder as tdx
from tests.verifier import vtpm_builder as b
from tests.verifier.verdicts import SNP_SIGNATURE_END, tdx_signed_parts
from verifier.az_snp_vtpm import AzSnpVtpmVerifier
from verifier.az_snp_vtpm import parse_evidence as parse_snp_evidence
from verifier.az_tdx_vtpm import AzTdxVtpmVerifier
from verifier.az_tdx_vtpm import parse_evidence as parse_tdx_evidence
from verifier.base import Verifier
from verifier.errors import VerificationError
from verifier.snp import SnpVerifier
from verifier.tdx import TdxVerifier
from verifier.vtpm.attest import parse_quote_attest
from verifier.vtpm.encoding import b64url_bytes, byte_array, first_pem_certificate, hex_bytes
from verifier.vtpm.evidence import load_document, tpm_quote
from verifier.vtpm.hcl import VAR_DATA_OFFSET, parse_hcl_report
from verifier.vtpm.vardata import check_user_data, parse_var_data

CASE = b.make_az_snp_case()
VERIFIER = AzSnpVtpmVerifier(SnpVerifier(anchors=CASE.snp.pki.anchors(), vcek_sources=[]))
EVIDENCE = {version: json.loads(CASE.evidence(version)) for version in (0, 1, 2)}
TDX_CASE = b.make_az_tdx_case()
TDX = TdxVerifier(source=None, root=TDX_CASE.pki.root, clock=lambda: tdx.NOW)
TDX.add_collateral(tdx.collateral(TDX_CASE.pki))
TDX_VERIFIER = AzTdxVtpmVerifier(TDX)
TDX_EVIDENCE = {version: json.loads(TDX_CASE.evidence(version)) for version in (0, 1, 2)}
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
        if out:
            out[position % len(out)] = value
    return bytes(out)


edits = st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4)


@FAST
@given(st.binary(max_size=300))
def test_attest_parser_takes_any_bytes(data: bytes) -> None:
    only_verification_errors(lambda: parse_quote_attest(data))


@FAST
@given(edits, st.integers(0, 40))
def test_attest_parser_takes_mutated_and_truncated_quotes(changes: list[tuple[int, int]], cut: int) -> None:
    message = mutate(CASE.quote.message, changes)
    only_verification_errors(lambda: parse_quote_attest(message[: len(message) - cut]))


@FAST
@given(st.binary(max_size=VAR_DATA_OFFSET + 64))
def test_hcl_parser_takes_any_bytes(data: bytes) -> None:
    only_verification_errors(lambda: parse_hcl_report(data))


@FAST
@given(edits, st.integers(0, 2000))
def test_hcl_parser_takes_mutated_and_truncated_reports(changes: list[tuple[int, int]], cut: int) -> None:
    hcl = mutate(CASE.hcl, [(VAR_DATA_OFFSET - 20 + p % 24, v) for p, v in changes])
    only_verification_errors(lambda: parse_hcl_report(hcl[: len(hcl) - cut]))


def _use_var_data(data: bytes) -> None:
    var_data = parse_var_data(data)
    only_verification_errors(var_data.ak_public_key)
    check_user_data(var_data, b.NONCE)


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_var_data_parser_takes_any_document(data: bytes) -> None:
    only_verification_errors(lambda: _use_var_data(data))


@FAST
@given(json_values, st.sampled_from(["keys", "user-data"]))
def test_var_data_fields_take_any_value(value: Any, name: str) -> None:
    doc = json.loads(CASE.var)
    doc[name] = value
    only_verification_errors(lambda: _use_var_data(json.dumps(doc).encode()))


@FAST
@given(json_values, st.sampled_from(["kty", "n", "e", "kid"]))
def test_ak_jwk_fields_take_any_value(value: Any, name: str) -> None:
    doc = json.loads(CASE.var)
    doc["keys"][0][name] = value
    only_verification_errors(lambda: _use_var_data(json.dumps(doc).encode()))


@FAST
@given(json_values | st.text(max_size=40))
def test_field_decoders_take_any_value(value: Any) -> None:
    for decode in (hex_bytes, b64url_bytes, byte_array, first_pem_certificate):
        only_verification_errors(lambda decode=decode: decode(value, "field"))  # type: ignore[misc]


@FAST
@given(json_values, st.sampled_from([0, 1, 2]))
def test_tpm_quote_decoder_takes_any_value(value: Any, version: int) -> None:
    only_verification_errors(lambda: tpm_quote(value, version))


@FAST
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_envelope_takes_any_document(data: bytes) -> None:
    only_verification_errors(lambda: load_document(data, "evidence"))
    only_verification_errors(lambda: parse_snp_evidence(data))
    only_verification_errors(lambda: parse_tdx_evidence(data))


@FAST
@given(st.sampled_from([0, 1, 2]), st.data())
def test_verifier_refuses_any_other_field_value(version: int, data: st.DataObject) -> None:
    refused_unless_version(VERIFIER, EVIDENCE[version], data)


def refused_unless_version(verifier: Verifier, evidence: dict[str, Any], data: st.DataObject) -> None:
    """Evidence with one field replaced by any JSON value is refused; only `version` may change (v1
    and v2 evidence differ in the user-data check, which this evidence passes)."""
    verifier.evaluate(json.dumps(evidence).encode(), b.NONCE)
    doc = dict(evidence)
    name = data.draw(st.sampled_from(sorted(doc)))
    doc[name] = data.draw(json_values)
    try:
        verifier.evaluate(json.dumps(doc).encode(), b.NONCE)
    except VerificationError:
        return
    assert name == "version" and doc[name] in (1, 2), (name, doc[name])


@FAST
@given(st.sampled_from([1, 2]), st.sampled_from(["signature", "message", "pcrs"]), json_values)
def test_verifier_refuses_any_other_quote_field(version: int, name: str, value: Any) -> None:
    doc = dict(EVIDENCE[version])
    doc["tpm_quote"] = {**doc["tpm_quote"], name: value}
    with pytest.raises(VerificationError):
        VERIFIER.evaluate(json.dumps(doc).encode(), b.NONCE)


@settings(max_examples=60, deadline=None)
@given(edits)
def test_mutated_hcl_report_is_refused_unless_its_bound_parts_stay(changes: list[tuple[int, int]]) -> None:
    hcl = mutate(CASE.hcl, changes)
    try:
        VERIFIER.evaluate(CASE.evidence(hcl=hcl), b.NONCE)
    except VerificationError:
        return
    parsed, genuine = parse_hcl_report(hcl), parse_hcl_report(CASE.hcl)
    assert parsed.var_data == genuine.var_data
    assert parsed.hw_report[:SNP_SIGNATURE_END] == genuine.hw_report[:SNP_SIGNATURE_END]


@FAST
@given(st.sampled_from([0, 1, 2]), st.data())
def test_tdx_verifier_refuses_any_other_field_value(version: int, data: st.DataObject) -> None:
    refused_unless_version(TDX_VERIFIER, TDX_EVIDENCE[version], data)


@settings(max_examples=60, deadline=None)
@given(edits, st.integers(0, 64))
def test_mutated_or_truncated_td_quote_is_refused_unless_its_signed_parts_stay(
    changes: list[tuple[int, int]], cut: int
) -> None:
    quote = mutate(TDX_CASE.td_quote, changes)
    quote = quote[: len(quote) - cut]
    try:
        TDX_VERIFIER.evaluate(TDX_CASE.evidence(td_quote=quote), b.NONCE)
    except VerificationError:
        return
    root = TDX_CASE.pki.root
    assert tdx_signed_parts(quote, root) == tdx_signed_parts(TDX_CASE.td_quote, root)
