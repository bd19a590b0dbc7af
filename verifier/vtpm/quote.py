"""A vTPM quote checked against its attestation key, the expected nonce and the PCR values sent along.

The quote itself only carries a digest of the selected PCRs; the values come beside it, unsigned, so
they are trusted only once their SHA-256 equals that digest. Only a single SHA-256 bank is accepted,
the one Azure's paravisor quotes (and the one `tpm.pcrNN` claims and init data refer to).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from verifier.errors import VerificationError
from verifier.vtpm.attest import TPM_ALG_SHA256, QuoteAttest, parse_quote_attest

SHA256_SIZE = 32
INIT_DATA_PCR = 8


@dataclass(frozen=True, slots=True)
class TpmQuote:
    """Upstream's `TpmQuote`: the raw RSA signature, the signed TPMS_ATTEST and the SHA-256 PCRs."""

    signature: bytes
    message: bytes
    pcrs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CheckedQuote:
    """A quote whose signature, nonce and PCR digest held, with its PCR values by index."""

    attest: QuoteAttest
    pcrs: Mapping[int, bytes]


def check_signature(quote: TpmQuote, ak: rsa.RSAPublicKey) -> None:
    """RSASSA-PKCS1-v1.5 with SHA-256 over the TPMS_ATTEST, as the vTPM signs with its AK."""
    try:
        ak.verify(quote.signature, quote.message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        raise VerificationError(
            "bad_quote_signature", "the TPM quote signature does not verify with the HCL AK"
        ) from None


def selected_pcrs(attest: QuoteAttest, values: tuple[bytes, ...]) -> dict[int, bytes]:
    """Pair the PCR values sent with the indices the quote selected, after checking their digest."""
    banks = attest.pcr_selections
    if len(banks) != 1 or banks[0].hash_alg != TPM_ALG_SHA256:
        algs = ", ".join(f"{bank.hash_alg:#06x}" for bank in banks) or "none"
        raise VerificationError(
            "pcr_selection_unsupported", f"the quote selects PCR banks [{algs}], not one SHA-256 bank"
        )
    indices = banks[0].indices
    if len(indices) != len(values):
        raise VerificationError(
            "pcr_selection_mismatch", f"the quote selects {len(indices)} PCRs, the evidence has {len(values)}"
        )
    digest = hashlib.sha256(b"".join(values)).digest()
    if digest != attest.pcr_digest:
        raise VerificationError(
            "pcr_digest_mismatch",
            f"SHA-256 of the PCR values is {digest.hex()}, the quote has {attest.pcr_digest.hex()}",
        )
    return dict(zip(indices, values, strict=True))


def check_quote(quote: TpmQuote, ak: rsa.RSAPublicKey, expected_nonce: bytes) -> CheckedQuote:
    """Signature, TPM-generated quote, extraData == nonce (exactly, as upstream), PCR digest."""
    check_signature(quote, ak)
    attest = parse_quote_attest(quote.message)
    if attest.extra_data != expected_nonce:
        raise VerificationError(
            "nonce_mismatch",
            f"TPM quote nonce is {attest.extra_data.hex()}, expected {expected_nonce.hex()}",
        )
    return CheckedQuote(attest, selected_pcrs(attest, quote.pcrs))


def init_data_pcr_value(digest: bytes) -> bytes:
    """PCR8 after one SHA-256 extend of `digest` from zero: the init data binding of a vTPM."""
    return hashlib.sha256(bytes(SHA256_SIZE) + digest).digest()


def check_init_data(pcrs: Mapping[int, bytes], expected_init_data_hash: bytes | None) -> None:
    """PCR8 == SHA256(0^32 || digest); the digest must be 32 bytes, as a SHA-256 bank extend is."""
    if expected_init_data_hash is None:
        return
    if len(expected_init_data_hash) != SHA256_SIZE:
        raise VerificationError(
            "init_data_mismatch",
            f"a vTPM binds a {SHA256_SIZE}-byte init data digest, got {len(expected_init_data_hash)} bytes",
        )
    actual = pcrs.get(INIT_DATA_PCR)
    if actual is None:
        raise VerificationError("init_data_mismatch", f"the quote does not cover PCR{INIT_DATA_PCR}")
    expected = init_data_pcr_value(expected_init_data_hash)
    if actual != expected:
        raise VerificationError(
            "init_data_mismatch", f"PCR{INIT_DATA_PCR} is {actual.hex()}, expected {expected.hex()}"
        )
