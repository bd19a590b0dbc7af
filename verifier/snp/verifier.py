"""The AMD SEV-SNP verifier: evidence in, upstream-shaped claims out, every failure a specific reason.

Checks, in order: report version and signing algorithm; the VCEK/VLEK (from the evidence's certificate
table, else the VCEK cache, else the configured sources) chained to a trusted ARK; the key bound to
the report (certificate TCB == reported_tcb, HWID == chip_id); the report signature; VMPL and the
debug policy bit when configured; REPORT_DATA and HOST_DATA against the expected values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from verifier.base import Claims
from verifier.errors import VerificationError
from verifier.lru import LruCache
from verifier.snp.anchors import TrustAnchors, pinned_anchors
from verifier.snp.chain import EndorsementKey, KeyKind, verify_endorsement_key
from verifier.snp.evidence import parse_evidence
from verifier.snp.kds import KdsFetcher
from verifier.snp.report import (
    FIRST_VERSION_WITH_CPUID,
    SIG_ALGO_ECDSA_P384_SHA384,
    Generation,
    SigningKey,
    SnpReport,
)
from verifier.snp.vcek import (
    DEFAULT_OFFLINE_STORE,
    OfflineStore,
    VcekCache,
    VcekFile,
    VcekKey,
    VcekSource,
    VcekUnavailable,
)

_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384())
_ChainKey = tuple[bytes, KeyKind, Generation | None, bytes | None, bytes | None]


@dataclass(frozen=True)
class SnpOptions:
    """What the verifier itself enforces (everything else is left to the attestation policy).

    Upstream accepts report versions 3..5 only; version 2 reports (older firmware) carry no CPUID, so
    their product line is taken from the certificate chain instead. Upstream leaves the debug bit
    to policy (claim `policy_debug_allowed`); `allow_debug=False` rejects it here as well. A report
    whose chip id is masked (all zero) has nothing to compare with the VCEK HWID.
    """

    min_report_version: int = 2
    max_report_version: int = 5
    required_vmpl: int | None = 0
    allow_debug: bool = True
    allow_masked_chip_id: bool = True
    chain_cache_size: int = 1024

    def __post_init__(self) -> None:
        if not 2 <= self.min_report_version <= self.max_report_version:
            raise ValueError("report versions must satisfy 2 <= min_report_version <= max_report_version")


def _utcnow() -> datetime:
    return datetime.now(UTC)


def vcek_sources_from_config(config: Mapping[str, Any] | None) -> list[VcekSource]:
    """Upstream's `SnpVerifierConfig`: `{"vcek_sources": [{"type": "KDS", "base_url": ...},
    {"type": "OfflineStore", "path": ...}]}`, default one KDS source; ours: `{"type": "File", "path":
    ...}`, one VCEK/VLEK file (DER or PEM)."""
    entries = (config or {}).get("vcek_sources", [{"type": "KDS"}])
    sources: list[VcekSource] = []
    for entry in entries:
        kind = entry.get("type")
        if kind == "KDS":
            base_url = entry.get("base_url")
            sources.append(KdsFetcher(base_url) if base_url else KdsFetcher())
        elif kind == "OfflineStore":
            path = entry.get("path")
            sources.append(OfflineStore(Path(path) if path else DEFAULT_OFFLINE_STORE))
        elif kind == "File" and isinstance(entry.get("path"), str):
            sources.append(VcekFile(Path(entry["path"])))
        else:
            raise ValueError(
                f"unknown VCEK source {entry!r} (expected KDS, OfflineStore or File with a path)"
            )
    return sources


def fit(data: bytes, size: int) -> bytes:
    """Upstream's `regularize_data`: zero-pad to `size`, or keep the first `size` bytes."""
    return data[:size].ljust(size, b"\0")


class SnpVerifier:
    tee = "snp"

    def __init__(
        self,
        options: SnpOptions | None = None,
        *,
        anchors: TrustAnchors | None = None,
        vcek_sources: Sequence[VcekSource] | None = None,
        vcek_cache: VcekCache | None = None,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.options = options or SnpOptions()
        self._anchors = pinned_anchors() if anchors is None else anchors
        self._sources = tuple(vcek_sources_from_config(None) if vcek_sources is None else vcek_sources)
        self._vcek_cache = VcekCache() if vcek_cache is None else vcek_cache
        self._chains: LruCache[_ChainKey, EndorsementKey] = LruCache(self.options.chain_cache_size)
        self._clock = clock

    def evaluate(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        parsed = parse_evidence(evidence)
        report = parsed.report
        kind = self._check_header(report)
        vek_der = parsed.certificate(kind.value)
        if vek_der is None:
            key = self._key_from_sources(report, kind)
        else:
            key = self._endorsement_key(
                report, kind, vek_der, parsed.certificate("ASK"), parsed.certificate("ARK")
            )
        self._check_signed_report(report, key)
        check_bindings(report, expected_report_data, expected_init_data_hash)
        return report_claims(report, key.generation)

    def verify_report(
        self,
        report: SnpReport,
        vek_der: bytes,
        *,
        intermediate_der: bytes | None = None,
        ark_der: bytes | None = None,
    ) -> Claims:
        """Everything but the REPORT_DATA/HOST_DATA bindings, for callers that bind data their own
        way (Azure's vTPM evidence): header, chain, key binding, signature, VMPL, debug."""
        kind = self._check_header(report)
        key = self._endorsement_key(report, kind, vek_der, intermediate_der, ark_der)
        self._check_signed_report(report, key)
        return report_claims(report, key.generation)

    def _check_header(self, report: SnpReport) -> KeyKind:
        low, high = self.options.min_report_version, self.options.max_report_version
        if not low <= report.version <= high:
            raise VerificationError(
                "unsupported_version", f"report version {report.version} is not in {low}..{high}"
            )
        if report.sig_algo != SIG_ALGO_ECDSA_P384_SHA384:
            raise VerificationError(
                "unsupported_signature_algorithm",
                f"report signature algorithm {report.sig_algo} is not ECDSA P-384",
            )
        if report.signing_key == SigningKey.VCEK:
            return KeyKind.VCEK
        if report.signing_key == SigningKey.VLEK:
            return KeyKind.VLEK
        raise VerificationError(
            "unsupported_signing_key", f"report signing key {report.signing_key} is not VCEK/VLEK"
        )

    @staticmethod
    def _report_generation(report: SnpReport) -> Generation | None:
        """The product line a v3+ report states; None for v2 (the certificate chain decides)."""
        if report.version < FIRST_VERSION_WITH_CPUID:
            return None
        generation = report.cpuid_generation
        if generation is None:
            raise VerificationError(
                "unsupported_processor",
                f"CPUID family {report.cpuid_family:#04x} model {report.cpuid_model:#04x} is no SNP product",
            )
        return generation

    def _endorsement_key(
        self,
        report: SnpReport,
        kind: KeyKind,
        vek_der: bytes,
        intermediate_der: bytes | None,
        ark_der: bytes | None,
    ) -> EndorsementKey:
        generation = self._report_generation(report)
        cache_key: _ChainKey = (vek_der, kind, generation, intermediate_der, ark_der)
        key = self._chains.get(cache_key)
        if key is None:
            key = verify_endorsement_key(
                vek_der,
                kind,
                self._anchors,
                generation=generation,
                intermediate_der=intermediate_der,
                ark_der=ark_der,
            )
            self._chains.put(cache_key, key)
        key.check_valid_at(self._clock())
        return key

    def _key_from_sources(self, report: SnpReport, kind: KeyKind) -> EndorsementKey:
        if kind is KeyKind.VLEK:
            raise VcekUnavailable(
                "a VLEK-signed report must carry its VLEK in the evidence's certificate table"
            )
        if report.chip_id_masked:
            raise VcekUnavailable(
                "the report's chip id is masked, so its VCEK can only come with the evidence"
            )
        generation = self._report_generation(report)
        if generation is not None:
            candidates = [generation]
        else:
            candidates = (
                [Generation.TURIN] if report.chip_id_turin_like else [Generation.MILAN, Generation.GENOA]
            )
        failures: list[str] = []
        for candidate in candidates:
            wanted = VcekKey(candidate, report.chip_id, report.reported_tcb(candidate))
            cached = self._vcek_cache.get(wanted)
            if cached is not None:
                return self._endorsement_key(report, kind, cached, None, None)
            for source in self._sources:
                try:
                    der = source.fetch(wanted)
                except VcekUnavailable as exc:
                    failures.append(str(exc))
                    continue
                key = self._endorsement_key(report, kind, der, None, None)
                self._vcek_cache.put(wanted, der)
                return key
        raise VcekUnavailable("; ".join(failures) or "no VCEK source is configured")

    def _check_signed_report(self, report: SnpReport, key: EndorsementKey) -> None:
        # Key binding first: a report/key mismatch is named as such rather than as a bad signature.
        mismatches = key.tcb.mismatches(report.reported_tcb(key.generation))
        if mismatches:
            raise VerificationError("tcb_mismatch", f"{key.kind.value} TCB differs: {', '.join(mismatches)}")
        if key.kind is KeyKind.VCEK:
            check_chip_id(report, key, allow_masked=self.options.allow_masked_chip_id)
        r, s = report.signature_rs
        try:
            key.public_key.verify(encode_dss_signature(r, s), report.signed_bytes, _ECDSA_SHA384)
        except (InvalidSignature, ValueError):
            raise VerificationError(
                "bad_signature", f"the report signature does not verify with the {key.kind.value}"
            ) from None
        required_vmpl = self.options.required_vmpl
        if required_vmpl is not None and report.vmpl != required_vmpl:
            raise VerificationError(
                "vmpl_mismatch", f"report VMPL is {report.vmpl}, expected {required_vmpl}"
            )
        if not self.options.allow_debug and report.policy_debug_allowed:
            raise VerificationError("debug_not_allowed", "the guest policy allows debugging")


def check_chip_id(report: SnpReport, key: EndorsementKey, *, allow_masked: bool) -> None:
    """The VCEK's HWID must be the report's chip id (upstream compares only for CN "VCEK", i.e. never)."""
    if report.chip_id_masked and allow_masked:
        return
    if key.hwid is None:
        raise VerificationError("chip_id_mismatch", "the VCEK has no HWID extension")
    if key.hwid != report.chip_id:
        raise VerificationError(
            "chip_id_mismatch",
            f"VCEK HWID {key.hwid.hex()[:16]}... is not chip id {report.chip_id.hex()[:16]}...",
        )


def check_bindings(
    report: SnpReport, expected_report_data: bytes, expected_init_data_hash: bytes | None
) -> None:
    """REPORT_DATA (64 bytes) and HOST_DATA (32 bytes) against the expected values, padded as upstream."""
    expected = fit(expected_report_data, 64)
    if report.report_data != expected:
        raise VerificationError(
            "report_data_mismatch",
            f"report_data is {report.report_data.hex()}, expected {expected.hex()}",
        )
    if expected_init_data_hash is not None:
        expected = fit(expected_init_data_hash, 32)
        if report.host_data != expected:
            raise VerificationError(
                "init_data_mismatch", f"host_data is {report.host_data.hex()}, expected {expected.hex()}"
            )


def report_claims(report: SnpReport, generation: Generation) -> Claims:
    """Upstream's SNP claims: the same keys, integers and booleans as such, byte fields as hex."""
    tcb = report.reported_tcb(generation)
    return {
        "policy_abi_major": report.policy_abi_major,
        "policy_abi_minor": report.policy_abi_minor,
        "policy_smt_allowed": report.policy_smt_allowed,
        "policy_migrate_ma": report.policy_migrate_ma,
        "policy_debug_allowed": report.policy_debug_allowed,
        "policy_single_socket": report.policy_single_socket,
        "reported_tcb_bootloader": tcb.bootloader,
        "reported_tcb_tee": tcb.tee,
        "reported_tcb_snp": tcb.snp,
        "reported_tcb_microcode": tcb.microcode,
        "platform_tsme_enabled": report.platform_tsme_enabled,
        "platform_smt_enabled": report.platform_smt_enabled,
        "measurement": report.measurement.hex(),
        "report_data": report.report_data.hex(),
        "init_data": report.host_data.hex(),
        "chip_id": report.chip_id.hex(),
    }
