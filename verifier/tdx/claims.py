"""TDX claims in upstream Trustee's shape (attestation-service/docs/tcb_claims.md, "Intel TDX").

Quote fields are hex of their raw bytes (so header `version` is "0400"); the DCAP supplemental
fields follow Intel's library as upstream exposes them. One addition says what upstream cannot:
`collateral_signature_verified` is false when the collateral came without its issuer chain.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from verifier.base import Claims
from verifier.dcap.pck import SGX_TYPES, PckInfo
from verifier.dcap.store import Collateral
from verifier.tdx.quote import Quote
from verifier.tdx.tcb import TcbResult

if TYPE_CHECKING:
    from verifier.tdx.verifier import VerifiedQuote

TD_ATTRIBUTE_BITS = {"debug": 0, "septve_disable": 28, "protection_keys": 30, "key_locker": 31, "perfmon": 63}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def td_attributes(raw: bytes) -> dict[str, bool]:
    value = int.from_bytes(raw, "little")
    return {name: bool(value >> bit & 1) for name, bit in TD_ATTRIBUTE_BITS.items()}


HEADER_FIELDS = (
    ("version", 0, 2),
    ("att_key_type", 2, 2),
    ("tee_type", 4, 4),
    ("reserved", 8, 4),
    ("vendor_id", 12, 16),
    ("user_data", 28, 20),
)


def _hex_fields(raw: bytes, fields: tuple[tuple[str, int, int], ...]) -> dict[str, str]:
    text = raw.hex()
    return {name: text[2 * offset : 2 * (offset + size)] for name, offset, size in fields}


def quote_map(quote: Quote) -> dict[str, Any]:
    """`quote`: header and body fields as hex of their raw bytes, plus v5 `type` and `size`."""
    out: dict[str, Any] = {
        "header": _hex_fields(quote.header.raw, HEADER_FIELDS),
        "body": _hex_fields(quote.body.raw, quote.body.fields),
    }
    if quote.header.version == 5:
        out["type"] = quote.body_type.to_bytes(2, "little").hex()
        out["size"] = quote.body_size.to_bytes(4, "little").hex()
    return out


def supplemental(
    pck: PckInfo, collateral: Collateral, tcb: TcbResult, stale: bool, root_key_id: str
) -> Claims:
    """The platform's claims (DCAP supplemental data, platform instance id): they depend on the
    PCK, its collateral and the TCB verdict only, so they are computed once per platform."""
    ext = pck.extension
    issued = [pck.earliest_issue, pck.validity.not_before, *collateral.issue_dates]
    expiring = [pck.validity.not_after, *collateral.expiry_dates]
    if collateral.chains_validity is not None:
        issued.append(collateral.chains_validity.not_before)
        expiring.append(collateral.chains_validity.not_after)
    claims: Claims = {
        "tcb_status": tcb.status,
        "tcb_date": rfc3339(tcb.tcb_date),
        "advisory_ids": list(tcb.advisory_ids),
        "collateral_expiration_status": "1" if stale else "0",
        "collateral_signature_verified": collateral.signature_verified,
        "earliest_issue_date": rfc3339(min(issued)),
        "latest_issue_date": rfc3339(max(issued)),
        "earliest_expiration_date": rfc3339(min(expiring)),
        "tcb_eval_num": min(
            collateral.tcb_info.evaluation_data_number, collateral.qe_identity.evaluation_data_number
        ),
        "root_key_id": root_key_id,
        "platform_provider_id": ext.ppid.hex(),
        "sgx_type": SGX_TYPES.get(ext.sgx_type, f"Unknown ({ext.sgx_type})"),
    }
    if ext.platform_instance_id is not None:
        # A GUID stored little-endian in the certificate; upstream renders it big-endian.
        claims["platform_instance_id"] = ext.platform_instance_id[::-1].hex()
    if collateral.pck_crl is not None:
        claims["pck_crl_num"] = collateral.pck_crl.number
    if collateral.root_ca_crl is not None:
        claims["root_ca_crl_num"] = collateral.root_ca_crl.number
    if ext.sgx_type > 0:
        for name, flag in (
            ("is_dynamic_platform", ext.dynamic_platform),
            ("is_cached_keys", ext.cached_keys),
            ("is_smt_enabled", ext.smt_enabled),
        ):
            if flag is not None:
                claims[name] = flag
    return claims


def quote_claims(verified: VerifiedQuote) -> Claims:
    """Claims of a verified quote, without event log (shared with the Azure TDX vTPM verifier)."""
    quote = verified.quote
    claims: Claims = dict(verified.supplemental)
    claims["advisory_ids"] = list(claims["advisory_ids"])  # not shared with the cache
    claims["quote"] = quote_map(quote)
    claims["td_attributes"] = td_attributes(quote.body.td_attributes)
    claims["report_data"] = quote.body.report_data.hex()
    claims["init_data"] = quote.body.mr_config_id.hex()
    return claims
