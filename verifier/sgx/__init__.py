"""Intel SGX: DCAP quote v3 verification against Intel's PCK chain and SGX collateral.

`SgxVerifier` is the `sgx` verifier (process-based TEEs: an enclave rather than a VM); the DCAP
checks it shares with TDX live in `verifier.dcap`.
"""

from verifier.sgx.quote import SgxQuote, parse_quote
from verifier.sgx.verifier import SgxVerifier, parse_evidence

__all__ = ["SgxQuote", "SgxVerifier", "parse_evidence", "parse_quote"]
