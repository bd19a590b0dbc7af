"""One call for every TEE: `evaluate(tee, evidence, expected_report_data, expected_init_data_hash)`.

TEE names are upstream's (`kbs_types::Tee` serialized). Verifier modules are imported on first use,
so a deployment only loads (and only needs the dependencies of) the TEEs it sees; an unknown TEE, or
one whose verifier is not available in this build, is a `VerificationError` like any rejected evidence.
Verifiers are built from upstream's `verifier_config` section (`snp_verifier.vcek_sources`,
`dcap_verifier.collateral_service` / `tcb_update_type`).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from verifier.base import Claims, Verifier
from verifier.errors import VerificationError

VerifierConfig = Mapping[str, Any]


@runtime_checkable
class AsyncVerifier(Protocol):
    """A verifier that may need to fetch collateral first (e.g. TDX from PCS); preferred when async."""

    async def evaluate_async(
        self,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims: ...


def import_verifier(module: str, name: str) -> Any:
    try:
        loaded = importlib.import_module(module)
    except ImportError as exc:
        raise VerificationError(
            "verifier_unavailable", f"{module} is not available in this build ({exc})"
        ) from None
    if not hasattr(loaded, name):
        raise VerificationError("verifier_unavailable", f"{module} has no {name}")
    return getattr(loaded, name)


def _sample(config: VerifierConfig) -> Verifier:
    verifier: Verifier = import_verifier("verifier.sample", "SampleVerifier")()
    return verifier


def _snp(config: VerifierConfig) -> Verifier:
    sources = import_verifier("verifier.snp.verifier", "vcek_sources_from_config")(config.get("snp_verifier"))
    verifier: Verifier = import_verifier("verifier.snp", "SnpVerifier")(vcek_sources=sources)
    return verifier


def _tdx(config: VerifierConfig) -> Verifier:
    dcap = dict(config.get("dcap_verifier") or {})
    source = import_verifier("verifier.dcap.sources", "source_from_config")(**dcap)
    verifier: Verifier = import_verifier("verifier.tdx", "TdxVerifier")(source=source)
    return verifier


def _sgx(config: VerifierConfig) -> Verifier:
    """The same `dcap_verifier` settings as `tdx`, with SGX's TCB info and QE identity."""
    dcap = dict(config.get("dcap_verifier") or {})
    sgx_tee = import_verifier("verifier.dcap.collateral", "SGX")
    source = import_verifier("verifier.dcap.sources", "source_from_config")(**dcap, tee=sgx_tee)
    verifier: Verifier = import_verifier("verifier.sgx", "SgxVerifier")(source=source)
    return verifier


def _az_snp_vtpm(config: VerifierConfig) -> Verifier:
    """The SNP half is checked by an SNP verifier with the same VCEK sources as the `snp` TEE."""
    verifier: Verifier = import_verifier("verifier.az_snp_vtpm", "AzSnpVtpmVerifier")(snp=_snp(config))
    return verifier


def _az_tdx_vtpm(config: VerifierConfig) -> Verifier:
    """The TD quote is checked by a TDX verifier with the same collateral source as the `tdx` TEE."""
    verifier: Verifier = import_verifier("verifier.az_tdx_vtpm", "AzTdxVtpmVerifier")(tdx=_tdx(config))
    return verifier


@dataclass(frozen=True, slots=True)
class TeeSpec:
    factory: Callable[[VerifierConfig], Verifier]
    tee_class: str = "cpu"  # names the submod (`cpu0`) and the policy (`<id>_cpu`)


TEES: Mapping[str, TeeSpec] = {
    "sample": TeeSpec(_sample),
    "snp": TeeSpec(_snp),
    "tdx": TeeSpec(_tdx),
    "sgx": TeeSpec(_sgx),
    "az-snp-vtpm": TeeSpec(_az_snp_vtpm),
    "az-tdx-vtpm": TeeSpec(_az_tdx_vtpm),
}


class VerifierRegistry:
    """TEE name -> verifier, each built once (so its certificate and collateral caches are kept)."""

    def __init__(self, config: VerifierConfig | None = None, tees: Mapping[str, TeeSpec] = TEES) -> None:
        self._config = dict(config or {})
        self._tees = dict(tees)
        self._verifiers: dict[str, Verifier] = {}
        self._lock = threading.Lock()

    @property
    def tees(self) -> list[str]:
        return sorted(self._tees)

    def _spec(self, tee: str) -> TeeSpec:
        spec = self._tees.get(tee)
        if spec is None:
            known = ", ".join(sorted(self._tees))
            raise VerificationError("unsupported_tee", f"TEE {tee[:40]!r} is not one of {known}")
        return spec

    def tee_class(self, tee: str) -> str:
        return self._spec(tee).tee_class

    def get(self, tee: str) -> Verifier:
        spec = self._spec(tee)
        with self._lock:
            verifier = self._verifiers.get(tee)
            if verifier is None:
                try:
                    verifier = spec.factory(self._config)
                except (ValueError, TypeError, AttributeError) as exc:
                    raise VerificationError(
                        "verifier_unavailable", f"the {tee} verifier configuration is invalid: {exc}"
                    ) from None
                self._verifiers[tee] = verifier
        return verifier

    def evaluate(
        self,
        tee: str,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        return self.get(tee).evaluate(evidence, expected_report_data, expected_init_data_hash)

    async def evaluate_async(
        self,
        tee: str,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        """As `evaluate`, letting verifiers that fetch collateral do so; CPU work runs in a thread."""
        verifier = await asyncio.to_thread(self.get, tee)
        if isinstance(verifier, AsyncVerifier):
            return await verifier.evaluate_async(evidence, expected_report_data, expected_init_data_hash)
        return await asyncio.to_thread(
            verifier.evaluate, evidence, expected_report_data, expected_init_data_hash
        )


_default_registry = VerifierRegistry()


def evaluate(
    tee: str,
    evidence: bytes,
    expected_report_data: bytes,
    expected_init_data_hash: bytes | None = None,
) -> Claims:
    """Verify `evidence` of TEE `tee`; raises `VerificationError` (only) when it is not accepted."""
    return _default_registry.evaluate(tee, evidence, expected_report_data, expected_init_data_hash)


def supported_tees() -> list[str]:
    return _default_registry.tees


__all__ = [
    "TEES",
    "AsyncVerifier",
    "TeeSpec",
    "VerifierConfig",
    "VerifierRegistry",
    "evaluate",
    "import_verifier",
    "supported_tees",
]
