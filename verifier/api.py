"""One call for every TEE: `evaluate(tee, evidence, expected_report_data, expected_init_data_hash)`.

TEE names are upstream's (`kbs_types::Tee` serialized). Verifier modules are imported on first use,
so a deployment only loads (and only needs the dependencies of) the TEEs it sees; an unknown TEE, or
one whose verifier is not available in this build, is a `VerificationError` like any rejected evidence.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from verifier.base import Claims, Verifier
from verifier.errors import VerificationError


@dataclass(frozen=True, slots=True)
class TeeSpec:
    """Where a TEE's verifier lives: `factory` in `module`, called with no arguments."""

    module: str
    factory: str
    tee_class: str = "cpu"  # names the submod (`cpu0`) and the policy (`<id>_cpu`)


TEES: Mapping[str, TeeSpec] = {
    "sample": TeeSpec("verifier.sample", "SampleVerifier"),
    "snp": TeeSpec("verifier.snp", "SnpVerifier"),
    "tdx": TeeSpec("verifier.tdx", "TdxVerifier"),
    "az-snp-vtpm": TeeSpec("verifier.az_snp_vtpm", "AzSnpVtpmVerifier"),
    "az-tdx-vtpm": TeeSpec("verifier.az_tdx_vtpm", "AzTdxVtpmVerifier"),
}


def _spec(tees: Mapping[str, TeeSpec], tee: str) -> TeeSpec:
    spec = tees.get(tee)
    if spec is None:
        known = ", ".join(sorted(tees))
        raise VerificationError("unsupported_tee", f"TEE {tee[:40]!r} is not one of {known}")
    return spec


def _load(tee: str, spec: TeeSpec) -> Verifier:
    try:
        module = importlib.import_module(spec.module)
    except ModuleNotFoundError as exc:
        raise VerificationError(
            "verifier_unavailable", f"the {tee} verifier is not available in this build ({exc})"
        ) from None
    factory: Callable[[], Verifier] | None = getattr(module, spec.factory, None)
    if factory is None:
        raise VerificationError(
            "verifier_unavailable", f"the {tee} verifier module {spec.module} has no {spec.factory}"
        )
    return factory()


class VerifierRegistry:
    """TEE name -> verifier, each built once (so its certificate and collateral caches are kept)."""

    def __init__(self, tees: Mapping[str, TeeSpec] = TEES) -> None:
        self._tees = dict(tees)
        self._verifiers: dict[str, Verifier] = {}
        self._lock = threading.Lock()

    @property
    def tees(self) -> list[str]:
        return sorted(self._tees)

    def tee_class(self, tee: str) -> str:
        return _spec(self._tees, tee).tee_class

    def get(self, tee: str) -> Verifier:
        spec = _spec(self._tees, tee)
        with self._lock:
            verifier = self._verifiers.get(tee)
            if verifier is None:
                verifier = self._verifiers[tee] = _load(tee, spec)
        return verifier

    def evaluate(
        self,
        tee: str,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
    ) -> Claims:
        return self.get(tee).evaluate(evidence, expected_report_data, expected_init_data_hash)


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


__all__ = ["TEES", "TeeSpec", "VerifierRegistry", "evaluate", "supported_tees"]
