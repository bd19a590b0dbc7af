"""AMD SEV-SNP: report parsing, AMD certificate chains, VCEK sources and the verifier."""

from verifier.snp.verifier import SnpOptions, SnpVerifier

__all__ = ["SnpOptions", "SnpVerifier"]
