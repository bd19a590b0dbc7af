"""SGX claims in upstream Trustee's shape (`deps/verifier/src/sgx/claims.rs`).

Every quote field is hex of its raw bytes (so header `version` is "0300" and `isv_svn` little-endian
hex); `report_data` and `init_data` (the enclave's CONFIGID) are repeated at the top, and
`platform_instance_id` comes with Platform CA PCKs, as upstream. The DCAP supplemental claims are
merged at the top level (`verifier.dcap.claims`).
"""

from __future__ import annotations

from verifier.base import Claims
from verifier.dcap.claims import hex_fields
from verifier.dcap.pck import PckInfo
from verifier.dcap.quote import ENCLAVE_REPORT_FIELDS
from verifier.dcap.verifier import VerifiedQuote
from verifier.sgx.quote import SgxQuote

HEADER_FIELDS = (
    ("version", 0, 2),
    ("att_key_type", 2, 2),
    ("att_key_data_0", 4, 4),
    ("qe_svn", 8, 2),
    ("pce_svn", 10, 2),
    ("vendor_id", 12, 16),
    ("user_data", 28, 20),
)


def parsed_claims(quote: SgxQuote, pck: PckInfo) -> Claims:
    """Upstream's `generate_parsed_claims`: what the quote and its PCK say, before collateral."""
    claims: Claims = {
        "header": hex_fields(quote.header.raw, HEADER_FIELDS),
        "body": hex_fields(quote.body.raw, ENCLAVE_REPORT_FIELDS),
        "report_data": quote.body.report_data.hex(),
        "init_data": quote.body.config_id.hex(),
    }
    instance = pck.extension.platform_instance_id
    if instance is not None:
        claims["platform_instance_id"] = instance[::-1].hex()  # a GUID stored little-endian
    return claims


def quote_claims(verified: VerifiedQuote[SgxQuote]) -> Claims:
    """The claims of a verified SGX quote: the supplemental ones, then upstream's parsed ones."""
    claims: Claims = dict(verified.supplemental)
    claims["advisory_ids"] = list(claims["advisory_ids"])  # not shared with the cache
    claims.update(parsed_claims(verified.quote, verified.pck))
    return claims
