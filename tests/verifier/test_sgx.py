"""SGX verifier on fabricated quotes v3 from a test CA: acceptance with upstream's claims, and every
rejection path (root, QE report and its binding, signatures, bindings, debug, TCB, collateral)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote as quote_url

import pytest

from tests.verifier import sgx_builder as b
from tests.verifier import tdx_builder as tb
from verifier.api import TeeSpec, VerifierRegistry
from verifier.dcap.collateral import SGX
from verifier.dcap.sources import source_from_config
from verifier.dcap.verifier import DcapOptions
from verifier.errors import VerificationError
from verifier.service import AttestationService
from verifier.sgx import SgxVerifier

REPORT_DATA = bytes(range(64))
CONFIG_ID = bytes(range(100, 164))


@pytest.fixture(scope="module")
def pki() -> tb.Pki:
    return tb.make_pki()


def make_verifier(pki: tb.Pki, *, raw: Any = None, clock: Any = tb.NOW, **options: Any) -> SgxVerifier:
    verifier = SgxVerifier(source=None, root=pki.root, options=DcapOptions(**options), clock=lambda: clock)
    verifier.add_collateral(raw if raw is not None else b.collateral(pki))
    return verifier


def quote(pki: tb.Pki, **fields: Any) -> bytes:
    fields = {"report_data": REPORT_DATA, "config_id": CONFIG_ID, **fields}
    return b.make_quote(pki, b.SgxSpec(**fields))


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(VerificationError) as info:
        call()
    return info.value.reason


def test_quote_verifies_with_upstream_claims(pki: tb.Pki) -> None:
    claims = make_verifier(pki).evaluate(b.evidence(quote(pki)), REPORT_DATA, CONFIG_ID)

    assert claims["header"] == {
        "version": "0300",
        "att_key_type": "0200",
        "att_key_data_0": "00000000",
        "qe_svn": "0800",
        "pce_svn": "0d00",
        "vendor_id": tb.QE_VENDOR_ID.hex(),
        "user_data": "00" * 20,
    }
    body = claims["body"]
    assert list(body) == [
        "cpu_svn", "misc_select", "reserved1", "isv_ext_prod_id", "attributes.flags", "attributes.xfrm",
        "mr_enclave", "reserved2", "mr_signer", "reserved3", "config_id", "isv_prod_id", "isv_svn",
        "config_svn", "reserved4", "isv_family_id", "report_data",
    ]  # fmt: skip
    assert body["mr_enclave"] == bytes(range(32)).hex()
    assert body["attributes.flags"] == "0500000000000000"
    assert body["isv_prod_id"] == "0000"
    assert claims["report_data"] == body["report_data"] == REPORT_DATA.hex()
    assert claims["init_data"] == body["config_id"] == CONFIG_ID.hex()
    assert claims["platform_instance_id"] == bytes(range(16))[::-1].hex()
    assert claims["tcb_status"] == "UpToDate"
    assert claims["collateral_expiration_status"] == "0"
    assert claims["sgx_type"] == "Scalable"
    assert claims["is_dynamic_platform"] is True
    json.dumps(claims)  # plain JSON


def test_processor_ca_chain_without_root_copy(pki: tb.Pki) -> None:
    processor = tb.make_pki(ca_type="processor", extension=tb.sgx_extension(platform_instance_id=None))
    claims = make_verifier(processor).evaluate(b.evidence(quote(processor, include_root=False)), REPORT_DATA)
    assert "platform_instance_id" not in claims


def test_wrong_root_is_rejected(pki: tb.Pki) -> None:
    other = tb.make_pki()
    verifier = make_verifier(other)
    assert reason_of(lambda: verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "chain_invalid"
    intel = SgxVerifier(source=None, clock=lambda: tb.NOW)  # the pinned Intel SGX Root CA
    assert reason_of(lambda: intel.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "chain_invalid"


def test_qe_report_must_bind_the_attestation_key(pki: tb.Pki) -> None:
    bad = quote(pki, qe_report_data=bytes(64))
    assert reason_of(lambda: make_verifier(pki).evaluate(b.evidence(bad), REPORT_DATA)) == "qe_report_binding"


@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (100, "quote signature"),  # attributes in the enclave report body
        (20, "quote signature"),  # QE vendor id in the header
        (436 + 128 + 64, "QE report signature"),  # QE report's MRENCLAVE
    ],
)
def test_flipped_signed_byte_fails_its_signature(pki: tb.Pki, offset: int, message: str) -> None:
    raw = bytearray(quote(pki))
    raw[offset] ^= 1
    with pytest.raises(VerificationError) as info:
        make_verifier(pki).evaluate(b.evidence(bytes(raw)), REPORT_DATA)
    assert info.value.reason == "bad_signature"
    assert message in str(info.value)


def test_report_data_binding(pki: tb.Pki) -> None:
    verifier = make_verifier(pki)
    evidence = b.evidence(quote(pki, report_data=REPORT_DATA[:32] + bytes(32)))
    verifier.evaluate(evidence, REPORT_DATA[:32])  # shorter: zero-padded, as upstream
    assert reason_of(lambda: verifier.evaluate(evidence, REPORT_DATA[:33])) == "report_data_mismatch"
    assert reason_of(lambda: verifier.evaluate(evidence, bytes(64))) == "report_data_mismatch"


def test_init_data_is_bound_to_the_64_byte_config_id(pki: tb.Pki) -> None:
    verifier = make_verifier(pki)
    evidence = b.evidence(quote(pki))
    verifier.evaluate(evidence, REPORT_DATA, CONFIG_ID + b"cut off")  # longer: first 64 bytes
    assert reason_of(lambda: verifier.evaluate(evidence, REPORT_DATA, CONFIG_ID[:48])) == "init_data_mismatch"
    short = b.evidence(quote(pki, config_id=bytes(range(32)) + bytes(32)))
    verifier.evaluate(short, REPORT_DATA, bytes(range(32)))  # a SHA-256 digest, zero-padded


def test_debug_enclave_is_reported_or_refused(pki: tb.Pki) -> None:
    debug = b.evidence(quote(pki, attributes=b.FLAG_INIT | b.FLAG_DEBUG | b.FLAG_MODE64))
    claims = make_verifier(pki).evaluate(debug, REPORT_DATA)
    assert claims["body"]["attributes.flags"] == "0700000000000000"
    refusing = make_verifier(pki, allow_debug=False)
    assert reason_of(lambda: refusing.evaluate(debug, REPORT_DATA)) == "debug_not_allowed"
    refusing.evaluate(b.evidence(quote(pki)), REPORT_DATA)


def test_out_of_date_tcb_is_reported_or_refused(pki: tb.Pki) -> None:
    levels = (b.tcb_level("UpToDate", pce_svn=14), b.DEFAULT_LEVELS[1])  # PCK has PCE SVN 13
    raw = b.collateral(pki, tcb_doc=b.tcb_info(pki, levels=levels))
    claims = make_verifier(pki, raw=raw).evaluate(b.evidence(quote(pki)), REPORT_DATA)
    assert (claims["tcb_status"], claims["advisory_ids"]) == ("OutOfDate", ["INTEL-SA-00334"])
    strict = make_verifier(pki, raw=raw, accepted_tcb_statuses=frozenset({"UpToDate"}))
    assert reason_of(lambda: strict.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "tcb_status_rejected"


def test_out_of_date_qe_folds_into_the_status(pki: tb.Pki) -> None:
    claims = make_verifier(pki).evaluate(b.evidence(quote(pki, qe_isv_svn=7)), REPORT_DATA)
    assert claims["tcb_status"] == "OutOfDate"
    too_old = b.evidence(quote(pki, qe_isv_svn=5))
    assert reason_of(lambda: make_verifier(pki).evaluate(too_old, REPORT_DATA)) == "tcb_status_rejected"


def test_revoked_and_unmatched_tcb_levels_are_rejected(pki: tb.Pki) -> None:
    for levels in ((b.tcb_level("Revoked"),), (b.tcb_level("UpToDate", sgx_svns=(9,) * 16),)):
        raw = b.collateral(pki, tcb_doc=b.tcb_info(pki, levels=levels))
        with pytest.raises(VerificationError, match="tcb_status_rejected"):
            make_verifier(pki, raw=raw).evaluate(b.evidence(quote(pki)), REPORT_DATA)


def test_qe_identity_must_be_intels_quoting_enclave(pki: tb.Pki) -> None:
    foreign = b.evidence(quote(pki, qe_mrsigner=bytes(32)))
    assert reason_of(lambda: make_verifier(pki).evaluate(foreign, REPORT_DATA)) == "qe_identity_mismatch"


def test_collateral_freshness_and_signatures(pki: tb.Pki) -> None:
    late = tb.NOW + timedelta(days=40)
    assert reason_of(
        lambda: make_verifier(pki, clock=late).evaluate(b.evidence(quote(pki)), REPORT_DATA)
    ) == ("collateral_stale")
    claims = make_verifier(pki, clock=late, accept_stale_collateral=True).evaluate(
        b.evidence(quote(pki)), REPORT_DATA
    )
    assert claims["collateral_expiration_status"] == "1"
    unsigned = b.collateral(pki, with_chains=False)
    verifier = make_verifier(pki, raw=unsigned)
    assert reason_of(lambda: verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "collateral_signature"
    revoked = b.collateral(pki, revoked_pck=[pki.pck.serial_number])
    verifier = make_verifier(pki, raw=revoked)
    assert reason_of(lambda: verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "cert_revoked"


def test_tdx_collateral_is_not_sgx_collateral(pki: tb.Pki) -> None:
    verifier = SgxVerifier(source=None, root=pki.root, clock=lambda: tb.NOW)
    assert reason_of(lambda: verifier.add_collateral(tb.collateral(pki))) == "collateral_invalid"
    sgx_tcb_for_tdx = b.collateral(pki, tcb_doc=b.tcb_info(pki, ident="TDX"))
    assert reason_of(lambda: verifier.add_collateral(sgx_tcb_for_tdx)) == "collateral_invalid"


def test_missing_collateral_is_unavailable(pki: tb.Pki) -> None:
    verifier = SgxVerifier(source=None, root=pki.root, clock=lambda: tb.NOW)
    assert (
        reason_of(lambda: verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)) == "collateral_unavailable"
    )


def test_other_quotes_and_malformed_evidence(pki: tb.Pki) -> None:
    verifier = make_verifier(pki)
    tdx = tb.evidence(tb.make_quote(pki))
    assert reason_of(lambda: verifier.evaluate(tdx, REPORT_DATA)) == "unsupported_version"
    assert reason_of(lambda: verifier.evaluate(b.evidence(quote(pki, tee_type=0x81)), REPORT_DATA)) == (
        "unsupported_quote"
    )
    for bad in (b"{}", b'{"quote": ""}', b'{"quote": 3}', b"[", b'{"quote": "@@"}'):
        with pytest.raises(VerificationError, match="malformed_evidence"):
            verifier.evaluate(bad, REPORT_DATA)
    raw = quote(pki)
    truncated = json.dumps({"quote": base64.b64encode(raw[:600]).decode()}).encode()
    assert reason_of(lambda: verifier.evaluate(truncated, REPORT_DATA)) == "malformed_evidence"


def test_registered_and_appraised_by_default_cpu(pki: tb.Pki) -> None:
    """`sgx` is a TEE of the service; the default policy's SGX path (ours) affirms a release enclave
    whose MRENCLAVE/MRSIGNER are registered, and keeps a debug enclave's configuration unaffirmed."""
    assert "sgx" in VerifierRegistry().tees
    verifier = make_verifier(pki)
    service = AttestationService(verifiers=VerifierRegistry(tees={"sgx": TeeSpec(lambda config: verifier)}))
    for name, value in (("mr_enclave", bytes(range(32))), ("mr_signer", bytes(range(32, 64)))):
        payload = base64.b64encode(json.dumps({name: [value.hex()]}).encode()).decode()
        service.register_reference_value(
            json.dumps({"version": "0.1.0", "type": "sample", "payload": payload})
        )

    def trust(attributes: int) -> dict[str, int]:
        evidence = b.evidence(b.make_quote(pki, b.SgxSpec(report_data=REPORT_DATA, attributes=attributes)))
        verifier_claims = verifier.evaluate(evidence, REPORT_DATA)
        annotated = {"sgx": verifier_claims}
        policy = service.get_policy("default_cpu")
        result = service._engine.evaluate(policy, annotated, ["data.policy.trust_claims"])
        vector: dict[str, int] = result["data.policy.trust_claims"]
        return vector

    release = trust(b.FLAG_INIT | b.FLAG_MODE64)
    assert (release["executables"], release["hardware"], release["configuration"]) == (3, 2, 3)
    debug = trust(b.FLAG_INIT | b.FLAG_DEBUG | b.FLAG_MODE64)
    assert debug["configuration"] == 36


def test_collateral_from_a_folder_of_pcs_responses(pki: tb.Pki, tmp_path: Path) -> None:
    """`dir://` collateral: the documents, their issuer chains and both CRLs as files; fetched when
    the store has none, with every signature checked."""
    raw = b.collateral(pki)
    files = {
        "tcbInfo.json": raw.tcb_info,
        "enclaveIdentity.json": raw.qe_identity,
        "tcbInfo-issuer-chain.pem": raw.tcb_info_issuer_chain,
        "enclaveIdentity-issuer-chain.pem": raw.qe_identity_issuer_chain,
        "pckcrl-platform.der": raw.pck_crl,
        "pckcrl-issuer-chain.pem": raw.pck_crl_issuer_chain,
        "rootcacrl.der": raw.root_ca_crl,
    }
    for name, data in files.items():
        assert data is not None
        (tmp_path / name).write_bytes(data)
    source = source_from_config(f"dir://{tmp_path}", tee=SGX)
    verifier = SgxVerifier(source=source, root=pki.root, clock=lambda: tb.NOW)
    claims = verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)
    assert claims["collateral_signature_verified"] is True
    assert (claims["pck_crl_num"], claims["root_ca_crl_num"]) == (1, 1)
    (tmp_path / "tcbInfo.json").unlink()
    empty = SgxVerifier(source=source, root=pki.root, clock=lambda: tb.NOW)
    with pytest.raises(VerificationError, match=r"collateral_unavailable: .* has no tcbInfo\.json"):
        empty.evaluate(b.evidence(quote(pki)), REPORT_DATA)


def test_collateral_from_a_pcs_client_tool_file(pki: tb.Pki, tmp_path: Path) -> None:
    """upstream's `file://` collateral: the SGX entries (`sgx_tcbinfo`, `qeidentity`) are used, and
    a file with only TDX collateral says what it lacks."""
    raw = b.collateral(pki)
    assert raw.tcb_info_issuer_chain and raw.qe_identity_issuer_chain and raw.pck_crl_issuer_chain
    assert raw.pck_crl is not None and raw.root_ca_crl is not None
    chain = quote_url(raw.pck_crl_issuer_chain)
    collaterals: dict[str, Any] = {
        "tcbinfos": [{"fmspc": tb.FMSPC.hex().upper(), "sgx_tcbinfo": json.loads(raw.tcb_info)}],
        "qeidentity": json.loads(raw.qe_identity),
        "certificates": {
            "TCB-Info-Issuer-Chain": quote_url(raw.tcb_info_issuer_chain),
            "SGX-Enclave-Identity-Issuer-Chain": quote_url(raw.qe_identity_issuer_chain),
            "SGX-PCK-Certificate-Issuer-Chain": {"PLATFORM": chain, "PROCESSOR": chain},
        },
        "pckcacrl": {"platformCrl": raw.pck_crl.hex(), "processorCrl": raw.pck_crl.hex()},
        "rootcacrl": raw.root_ca_crl.hex(),
    }
    path = tmp_path / "collateral.json"
    path.write_text(json.dumps({"collaterals": collaterals}, indent=1))
    verifier = SgxVerifier(
        source=source_from_config(f"file://{path}", tee=SGX), root=pki.root, clock=lambda: tb.NOW
    )
    claims = verifier.evaluate(b.evidence(quote(pki)), REPORT_DATA)
    assert claims["collateral_signature_verified"] is True and claims["pck_crl_num"] == 1
    collaterals["tcbinfos"][0] = {"fmspc": tb.FMSPC.hex().upper(), "tdx_tcbinfo": {}}
    path.write_text(json.dumps({"collaterals": collaterals}))
    fresh = SgxVerifier(
        source=source_from_config(f"file://{path}", tee=SGX), root=pki.root, clock=lambda: tb.NOW
    )
    with pytest.raises(VerificationError, match="lacks SGX TCB info or QE identity"):
        fresh.evaluate(b.evidence(quote(pki)), REPORT_DATA)
