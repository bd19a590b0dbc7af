"""Intel TDX: quote v4/v5 verification against Intel's PCK chain and collateral, CCEL replay.

`TdxVerifier` is the `tdx` verifier; its `verify_quote`/`verify_quote_async` verify raw quote
bytes for reuse by the Azure TDX vTPM verifier, and `quote_claims` renders their claims.
"""

from verifier.dcap.sources import CollateralSource, OfflineSource, PcsSource, source_from_config
from verifier.dcap.store import Collateral, CollateralNeeded, CollateralStore, RawCollateral
from verifier.dcap.verifier import VerifiedQuote
from verifier.tdx.verifier import TdxOptions, TdxVerifier, parse_evidence

__all__ = [
    "Collateral",
    "CollateralNeeded",
    "CollateralSource",
    "CollateralStore",
    "OfflineSource",
    "PcsSource",
    "RawCollateral",
    "TdxOptions",
    "TdxVerifier",
    "VerifiedQuote",
    "parse_evidence",
    "source_from_config",
]
