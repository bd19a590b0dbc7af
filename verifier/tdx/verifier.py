"""The Intel TDX verifier: upstream's `tdx` evidence in, claims out.

Order of checks follows Intel's quote verification: PCK chain to the pinned root, QE report
signature and its binding to the attestation key, quote signature, then collateral (revocation,
QE identity, TDX module, TCB level). Only after that come the bindings the relying party asked
for: report data, init data (MR_CONFIG_ID), and the event log replay against the RTMRs.

Verification is synchronous CPU work over bytes and cached state (async callers run it in a worker
thread). When the store lacks usable collateral for a platform the core raises `CollateralNeeded`;
the verifier answers that by fetching from its source once and verifying again, so only a cache
miss ever waits on the network.
"""

from __future__ import annotations

import binascii
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verifier.base import Claims
from verifier.dcap.ecdsa import p256_key, verify_p256
from verifier.dcap.pck import PckChainCache, PckInfo
from verifier.dcap.sources import CollateralSource, PcsSource
from verifier.dcap.store import Collateral, CollateralNeeded, CollateralStore, RawCollateral, load_collateral
from verifier.dcap.x509chain import load_intel_root
from verifier.errors import EvidenceFormatError, VerificationError
from verifier.lru import LruCache
from verifier.tdx import claims as tdx_claims
from verifier.tdx import eventlog
from verifier.tdx.quote import Quote, parse_quote
from verifier.tdx.tcb import UPSTREAM_ACCEPTED, TcbResult, check_platform, evaluate_tcb, match_qe_identity

REPORT_DATA_SIZE = 64
INIT_DATA_SIZE = 48
INTEL_PCS = PcsSource()  # upstream's default collateral service


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class TdxOptions:
    """What the verifier itself enforces; everything else is left to the attestation policy.

    Stale or unverifiable collateral is refused unless accepted here (and then reported in the
    claims). Upstream leaves a debug TD to policy (claim `td_attributes.debug`), as the SNP
    verifier does; `allow_debug=False` rejects it here as well.
    """

    accept_stale_collateral: bool = False  # collateral past nextUpdate: reported as "1" if accepted
    accept_unverified_collateral: bool = False  # collateral whose issuer chain did not come along
    allow_debug: bool = True
    accepted_tcb_statuses: frozenset[str] = UPSTREAM_ACCEPTED
    refetch_after: timedelta = timedelta(hours=1)  # ask the source again for stale collateral


@dataclass(frozen=True, slots=True)
class VerifiedQuote:
    """A quote whose signatures, chain and collateral were checked, with what was learnt."""

    quote: Quote
    pck: PckInfo
    collateral: Collateral
    tcb: TcbResult
    stale: bool  # some collateral is past its nextUpdate (accepted by option)
    supplemental: Claims  # DCAP supplemental claims (shared: copy before changing)


@dataclass(frozen=True, slots=True)
class _Verdict:
    pck: PckInfo  # held so that the ids in the cache key stay theirs
    collateral: Collateral
    tcb: TcbResult
    supplemental: Claims


def _check_revocation(pck: PckInfo, collateral: Collateral) -> None:
    if collateral.pck_crl is not None:
        if collateral.pck_crl.issuer != pck.leaf_issuer:
            raise VerificationError("collateral_invalid", "the PCK CRL is not from the PCK's issuer")
        if pck.leaf_serial in collateral.pck_crl.revoked:
            raise VerificationError("cert_revoked", "the PCK certificate is revoked")
    if collateral.root_ca_crl is not None and pck.ca_serial in collateral.root_ca_crl.revoked:
        raise VerificationError("cert_revoked", "the PCK CA certificate is revoked")


def _fit(value: bytes, size: int) -> bytes:
    """Upstream's `regularize_data`: zero-pad to `size`, or keep the first `size` bytes."""
    return value[:size].ljust(size, b"\x00")


def _b64(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise EvidenceFormatError(f"{what} is not a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except binascii.Error as exc:
        raise EvidenceFormatError(f"{what} is not standard base64: {exc}") from None


def parse_evidence(
    evidence: bytes, decode_quote: Callable[[object, str], bytes] = _b64
) -> tuple[bytes, bytes | None]:
    """Upstream's `{"cc_eventlog": "<b64>" | null, "quote": "<b64>"}`: (quote, CCEL or None)."""
    try:
        doc = json.loads(evidence)
    except (ValueError, RecursionError) as exc:
        raise EvidenceFormatError(f"TDX evidence is not JSON: {exc}") from None
    if not isinstance(doc, dict) or "quote" not in doc:
        raise EvidenceFormatError("TDX evidence must be an object with a 'quote'")
    quote = decode_quote(doc["quote"], "quote")
    if not quote:
        raise EvidenceFormatError("TDX quote is empty")
    ccel = doc.get("cc_eventlog")
    return quote, _b64(ccel, "cc_eventlog") if ccel else None


# Base64 characters (774 bytes) past the quote signature of every TDX quote layout: what follows
# is the platform's certification data (QE report, PCK chain), the same in each of its quotes.
QUOTE_HEAD_CHARS = 1032


class QuoteDecoder:
    """Base64 decoding of quotes with the certification-data part memoized by its text: decoding
    those ~4 KB again for every quote would be the largest Python cost of a verification."""

    def __init__(self, capacity: int = 256) -> None:
        self._tails: LruCache[str, bytes] = LruCache(capacity)

    def __call__(self, value: object, what: str) -> bytes:
        if isinstance(value, str) and len(value) > QUOTE_HEAD_CHARS:
            head_text, tail_text = value[:QUOTE_HEAD_CHARS], value[QUOTE_HEAD_CHARS:]
            tail = self._tails.get(tail_text)
            if tail is None:
                with contextlib.suppress(binascii.Error):
                    tail = binascii.a2b_base64(tail_text, strict_mode=True)
                    self._tails.put(tail_text, tail)
            if tail is not None and "=" not in head_text:  # padding belongs at the very end
                with contextlib.suppress(binascii.Error):
                    return binascii.a2b_base64(head_text, strict_mode=True) + tail
        return _b64(value, what)  # one piece: exactly strict decoding's verdict on bad input


class TdxVerifier:
    """Verifier for tee `tdx`; `verify_quote` is the part the Azure TDX vTPM verifier reuses."""

    tee = "tdx"

    def __init__(
        self,
        *,
        source: CollateralSource | None = INTEL_PCS,
        store: CollateralStore | None = None,
        options: TdxOptions | None = None,
        root: x509.Certificate | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._root = root if root is not None else load_intel_root()
        self._source = source
        self._store = store if store is not None else CollateralStore()
        self._options = options or TdxOptions()
        self._clock = clock
        self._pck = PckChainCache(self._root)
        self._keys: LruCache[bytes, ec.EllipticCurvePublicKey] = LruCache(1024)
        self._verdicts: LruCache[tuple[object, ...], _Verdict] = LruCache(1024)
        self._decode_quote = QuoteDecoder()
        point = self._root.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        self.root_key_id = hashlib.sha384(point).hexdigest()

    def add_collateral(self, raw: RawCollateral) -> Collateral:
        """Load collateral (checking what signatures it can) into the store, e.g. at startup."""
        collateral = load_collateral(raw, self._root, self._clock())
        self._store.put(collateral)
        return collateral

    def _attestation_key(self, raw: bytes) -> ec.EllipticCurvePublicKey:
        key = self._keys.get(raw)
        if key is None:
            key = p256_key(raw)
            self._keys.put(raw, key)
        return key

    def _collateral(self, fmspc: bytes, ca: str, now: datetime) -> tuple[Collateral, bool]:
        entry = self._store.get(fmspc, ca)
        if entry is None:
            raise CollateralNeeded(fmspc, ca, "no collateral")
        stale = now > entry.next_update
        if stale and self._source is not None and now - entry.loaded_at >= self._options.refetch_after:
            raise CollateralNeeded(fmspc, ca, "collateral is stale")
        if stale and not self._options.accept_stale_collateral:
            raise VerificationError(
                "collateral_stale",
                f"collateral for FMSPC {fmspc.hex()} expired on {entry.next_update.isoformat()}",
            )
        if not entry.signature_verified and not self._options.accept_unverified_collateral:
            raise VerificationError(
                "collateral_signature",
                "collateral came without its TCB signing chain: its signature cannot be checked",
            )
        if entry.chains_validity is not None:
            entry.chains_validity.check(now, "collateral issuer chain")
        return entry, stale

    def verify_quote(self, raw: bytes) -> VerifiedQuote:
        """Verify a raw TDX quote up to its TCB status (no relying-party bindings), fetching
        collateral from the source when the store has none that is usable."""
        try:
            return self._verify_quote(raw)
        except CollateralNeeded as need:
            if self._source is None:
                raise
            self._refresh(self._source, need)
        return self._verify_quote(raw)

    def _verify_quote(self, raw: bytes) -> VerifiedQuote:
        quote = parse_quote(raw)
        now = self._clock()
        pck = self._pck.get(quote.pck_chain_pem, now)
        if not verify_p256(pck.public_key, quote.qe_report_signature, quote.qe_report.raw):
            raise VerificationError("bad_signature", "QE report signature does not verify with the PCK key")
        binding = hashlib.sha256(quote.attestation_key + quote.qe_auth_data).digest()
        if quote.qe_report.report_data[:32] != binding:
            raise VerificationError(
                "qe_report_binding", "QE report data is not SHA-256(attestation key || QE auth data)"
            )
        if not verify_p256(self._attestation_key(quote.attestation_key), quote.signature, quote.signed_data):
            raise VerificationError(
                "bad_signature", "quote signature does not verify with the attestation key"
            )
        collateral, stale = self._collateral(pck.extension.fmspc, pck.ca, now)
        verdict = self._verdict(quote, pck, collateral, stale)
        if verdict.tcb.status not in self._options.accepted_tcb_statuses:
            raise VerificationError("tcb_status_rejected", f"TCB status {verdict.tcb.status} is not accepted")
        if quote.body.td_attributes[0] & 1 and not self._options.allow_debug:
            raise VerificationError("debug_not_allowed", "the TD runs in debug mode")
        return VerifiedQuote(quote, pck, collateral, verdict.tcb, stale, verdict.supplemental)

    def _verdict(self, quote: Quote, pck: PckInfo, collateral: Collateral, stale: bool) -> _Verdict:
        """Revocation, identities and TCB level of the platform: the same for every quote a
        platform sends with the same TCB, QE and collateral, hence cached."""
        body = quote.body
        # TEE TCB SVN, MR_SEAM, MRSIGNER_SEAM, SEAM attributes (+ TDX 1.5 TEE TCB SVN2), QE report
        platform = (quote.body_type, body.raw[:120], body.raw[584:600], quote.qe_report.raw)
        key = (id(pck), id(collateral), stale, *platform)
        cached = self._verdicts.get(key)
        if cached is not None and cached.pck is pck and cached.collateral is collateral:
            return cached
        _check_revocation(pck, collateral)
        check_platform(collateral.tcb_info, pck.extension)
        qe_level = match_qe_identity(collateral.qe_identity, quote.qe_report)
        tcb = evaluate_tcb(collateral.tcb_info, pck.extension, body, quote.body_type, qe_level)
        extra = tdx_claims.supplemental(pck, collateral, tcb, stale, self.root_key_id)
        verdict = _Verdict(pck, collateral, tcb, extra)
        self._verdicts.put(key, verdict)
        return verdict

    @staticmethod
    def quote_claims(verified: VerifiedQuote) -> Claims:
        return tdx_claims.quote_claims(verified)

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        """Verify upstream-shaped `tdx` evidence; the claims are upstream's (see `claims`)."""
        raw_quote, ccel = parse_evidence(evidence, self._decode_quote)
        verified = self.verify_quote(raw_quote)
        body = verified.quote.body
        if body.report_data != _fit(expected_report_data, REPORT_DATA_SIZE):
            raise VerificationError("report_data_mismatch", "quote report data is not the expected one")
        if expected_init_data_hash is not None and body.mr_config_id != _fit(
            expected_init_data_hash, INIT_DATA_SIZE
        ):
            raise VerificationError("init_data_mismatch", "MR_CONFIG_ID is not the expected init data hash")
        claims = self.quote_claims(verified)
        if ccel is not None:
            events = eventlog.parse_ccel(ccel)
            for index, (replayed, quoted) in enumerate(zip(eventlog.replay(events), body.rtmrs, strict=True)):
                if replayed != quoted:
                    raise VerificationError(
                        "rtmr_mismatch",
                        f"event log replays RTMR{index} to {replayed.hex()}, the quote has {quoted.hex()}",
                    )
            claims["uefi_event_logs"] = eventlog.event_claims(events)
        return claims

    def _refresh(self, source: CollateralSource, need: CollateralNeeded) -> None:
        try:
            raw = source.fetch(need.fmspc, need.ca)
        except VerificationError:
            old = self._store.get(need.fmspc, need.ca)
            if old is None:
                raise
            # Keep serving what we have (stale rules apply) without asking again at once.
            self._store.put(dataclasses.replace(old, loaded_at=self._clock()))
            return
        self.add_collateral(raw)
