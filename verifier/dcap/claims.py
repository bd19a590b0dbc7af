"""DCAP supplemental claims, as upstream exposes Intel's library's supplemental data (TDX and SGX).

They depend on the PCK, its collateral and the TCB verdict only, so a verifier computes them once
per platform. Hex fields render raw bytes; one addition says what upstream cannot:
`collateral_signature_verified` is false when the collateral came without its issuer chain.
"""

from __future__ import annotations

from datetime import UTC, datetime

from verifier.base import Claims
from verifier.dcap.pck import SGX_TYPES, PckInfo
from verifier.dcap.store import Collateral
from verifier.dcap.tcb import TcbResult


def hex_fields(raw: bytes, fields: tuple[tuple[str, int, int], ...]) -> dict[str, str]:
    """(name, offset, size) fields of `raw` as hex of their bytes, as upstream's claims render them."""
    text = raw.hex()
    return {name: text[2 * offset : 2 * (offset + size)] for name, offset, size in fields}


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def supplemental(
    pck: PckInfo, collateral: Collateral, tcb: TcbResult, stale: bool, root_key_id: str
) -> Claims:
    """The platform's claims (DCAP supplemental data, platform instance id)."""
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
