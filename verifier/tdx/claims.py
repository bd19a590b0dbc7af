"""TDX claims in upstream Trustee's shape (attestation-service/docs/tcb_claims.md, "Intel TDX").

Quote fields are hex of their raw bytes (so header `version` is "0400"); the DCAP supplemental
fields come from `verifier.dcap.claims`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from verifier.base import Claims
from verifier.dcap.claims import hex_fields
from verifier.tdx.quote import Quote

if TYPE_CHECKING:
    from verifier.dcap.verifier import VerifiedQuote

TD_ATTRIBUTE_BITS = {"debug": 0, "septve_disable": 28, "protection_keys": 30, "key_locker": 31, "perfmon": 63}


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


def quote_map(quote: Quote) -> dict[str, Any]:
    """`quote`: header and body fields as hex of their raw bytes, plus v5 `type` and `size`."""
    out: dict[str, Any] = {
        "header": hex_fields(quote.header.raw, HEADER_FIELDS),
        "body": hex_fields(quote.body.raw, quote.body.fields),
    }
    if quote.header.version == 5:
        out["type"] = quote.body_type.to_bytes(2, "little").hex()
        out["size"] = quote.body_size.to_bytes(4, "little").hex()
    return out


def quote_claims(verified: VerifiedQuote[Quote]) -> Claims:
    """Claims of a verified quote, without event log (shared with the Azure TDX vTPM verifier)."""
    quote = verified.quote
    claims: Claims = dict(verified.supplemental)
    claims["advisory_ids"] = list(claims["advisory_ids"])  # not shared with the cache
    claims["quote"] = quote_map(quote)
    claims["td_attributes"] = td_attributes(quote.body.td_attributes)
    claims["report_data"] = quote.body.report_data.hex()
    claims["init_data"] = quote.body.mr_config_id.hex()
    return claims
