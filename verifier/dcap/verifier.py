"""The DCAP verification both Intel verifiers run, up to a TCB status (no relying-party bindings).

Order of checks follows Intel's quote verification: PCK chain to the pinned root, QE report
signature and its binding to the attestation key, quote signature, then collateral (revocation,
QE identity, the TEE's TCB level). A TEE supplies its quote parser, what identifies its platform's
TCB in a quote, its TCB evaluation and what makes a quote a debug one (`DcapVerifier`'s abstract
methods); bindings (report data, init data) and claims are the TEE verifier's own.

Verification is synchronous CPU work over bytes and cached state (async callers run it in a worker
thread). When the store lacks usable collateral for a platform the core raises `CollateralNeeded`;
`verify_quote` answers that by fetching from its source once and verifying again, so only a cache
miss ever waits on the network.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Generic, Literal, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from verifier.base import Claims
from verifier.dcap import claims as dcap_claims
from verifier.dcap.collateral import DcapTee, IsvLevel
from verifier.dcap.ecdsa import p256_key, verify_p256
from verifier.dcap.evidence import QuoteDecoder
from verifier.dcap.pck import PckChainCache, PckInfo
from verifier.dcap.quote import DcapQuote
from verifier.dcap.sources import CollateralSource, PcsSource
from verifier.dcap.store import Collateral, CollateralNeeded, CollateralStore, RawCollateral, load_collateral
from verifier.dcap.tcb import UPSTREAM_ACCEPTED, TcbResult, check_platform, match_qe_identity
from verifier.dcap.x509chain import load_intel_root
from verifier.errors import VerificationError
from verifier.lru import LruCache

Q = TypeVar("Q", bound=DcapQuote)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class DcapOptions:
    """What the verifier itself enforces; everything else is left to the attestation policy.

    Stale or unverifiable collateral is refused unless accepted here (and then reported in the
    claims). Upstream leaves a debug TD or enclave to policy (it is in the claims), as the SNP
    verifier does; `allow_debug=False` rejects it here as well.
    """

    accept_stale_collateral: bool = False  # collateral past nextUpdate: reported as "1" if accepted
    accept_unverified_collateral: bool = False  # collateral whose issuer chain did not come along
    allow_debug: bool = True
    accepted_tcb_statuses: frozenset[str] = UPSTREAM_ACCEPTED
    refetch_after: timedelta = timedelta(hours=1)  # ask the source again for stale collateral


@dataclass(frozen=True, slots=True)
class VerifiedQuote(Generic[Q]):
    """A quote whose signatures, chain and collateral were checked, with what was learnt."""

    quote: Q
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


class DcapVerifier(abc.ABC, Generic[Q]):
    """The DCAP core of one TEE's verifier (`dcap_tee` says which collateral it uses). `source`
    "pcs" is upstream's default collateral service, Intel's PCS; None: only what was added."""

    dcap_tee: DcapTee

    def __init__(
        self,
        *,
        source: CollateralSource | Literal["pcs"] | None = "pcs",
        store: CollateralStore | None = None,
        options: DcapOptions | None = None,
        root: x509.Certificate | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._root = root if root is not None else load_intel_root()
        self._source = PcsSource(tee=self.dcap_tee) if source == "pcs" else source
        self._store = store if store is not None else CollateralStore()
        self._options = options or DcapOptions()
        self._clock = clock
        self._pck = PckChainCache(self._root)
        self._keys: LruCache[bytes, ec.EllipticCurvePublicKey] = LruCache(1024)
        self._verdicts: LruCache[tuple[object, ...], _Verdict] = LruCache(1024)
        self._decode_quote = QuoteDecoder()
        point = self._root.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        self.root_key_id = hashlib.sha384(point).hexdigest()

    # ---- what each TEE supplies

    @abc.abstractmethod
    def parse_quote(self, raw: bytes) -> Q:
        """Structure only (a `VerificationError` for anything malformed or unsupported)."""

    @abc.abstractmethod
    def _platform_tcb(self, quote: Q) -> tuple[bytes | int, ...]:
        """The quote bytes besides the PCK and QE report that the TCB verdict depends on."""

    @abc.abstractmethod
    def _evaluate_tcb(
        self, collateral: Collateral, pck: PckInfo, quote: Q, qe_level: IsvLevel | None
    ) -> TcbResult:
        """Intel's TCB status for this platform, its TEE and its QE."""

    @abc.abstractmethod
    def _debug(self, quote: Q) -> str | None:
        """Why the quote comes from a debuggable TEE, or None."""

    # ---- the shared checks

    def add_collateral(self, raw: RawCollateral) -> Collateral:
        """Load collateral (checking what signatures it can) into the store, e.g. at startup."""
        collateral = load_collateral(raw, self._root, self._clock(), self.dcap_tee)
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

    def verify_signatures(self, quote: Q, now: datetime) -> PckInfo:
        """The checks that need no collateral: PCK chain, QE report signature and binding, quote
        signature. Returns the verified PCK."""
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
        return pck

    def verify_quote(self, raw: bytes) -> VerifiedQuote[Q]:
        """Verify a raw quote up to its TCB status (no relying-party bindings), fetching collateral
        from the source when the store has none that is usable."""
        try:
            return self._verify_quote(raw)
        except CollateralNeeded as need:
            if self._source is None:
                raise
            self._refresh(self._source, need)
        return self._verify_quote(raw)

    def _verify_quote(self, raw: bytes) -> VerifiedQuote[Q]:
        quote = self.parse_quote(raw)
        now = self._clock()
        pck = self.verify_signatures(quote, now)
        collateral, stale = self._collateral(pck.extension.fmspc, pck.ca, now)
        verdict = self._verdict(quote, pck, collateral, stale)
        if verdict.tcb.status not in self._options.accepted_tcb_statuses:
            raise VerificationError("tcb_status_rejected", f"TCB status {verdict.tcb.status} is not accepted")
        debug = self._debug(quote)
        if debug is not None and not self._options.allow_debug:
            raise VerificationError("debug_not_allowed", debug)
        return VerifiedQuote(quote, pck, collateral, verdict.tcb, stale, verdict.supplemental)

    def _verdict(self, quote: Q, pck: PckInfo, collateral: Collateral, stale: bool) -> _Verdict:
        """Revocation, identities and TCB level of the platform: the same for every quote a
        platform sends with the same TCB, QE and collateral, hence cached."""
        key = (id(pck), id(collateral), stale, *self._platform_tcb(quote), quote.qe_report.raw)
        cached = self._verdicts.get(key)
        if cached is not None and cached.pck is pck and cached.collateral is collateral:
            return cached
        _check_revocation(pck, collateral)
        check_platform(collateral.tcb_info, pck.extension)
        qe_level = match_qe_identity(collateral.qe_identity, quote.qe_report)
        tcb = self._evaluate_tcb(collateral, pck, quote, qe_level)
        extra = dcap_claims.supplemental(pck, collateral, tcb, stale, self.root_key_id)
        verdict = _Verdict(pck, collateral, tcb, extra)
        self._verdicts.put(key, verdict)
        return verdict

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
