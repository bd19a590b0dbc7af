"""One call for every TEE: `evaluate(tee, evidence, expected_report_data, expected_init_data_hash)`.

TEE names are upstream's (`kbs_types::Tee` serialized). Verifier modules are imported on first use,
so a deployment only loads (and only needs the dependencies of) the TEEs it sees; an unknown TEE, or
one whose verifier is not available in this build, is a `VerificationError` like any rejected evidence.
Verifiers are built from upstream's `verifier_config` section (`snp_verifier.vcek_sources`,
`dcap_verifier.collateral_service` / `tcb_update_type`) and our options in it (`verifier.options`:
required VMPL, report versions, debug refusal, collateral freshness, a fixed clock). A call may pass
`options`, a fragment of that section merged over the configured one: the verifier for those options
is built once and kept, with its own caches.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from verifier import options as verifier_options
from verifier.base import Claims, Verifier
from verifier.errors import VerificationError
from verifier.lru import LruCache

VerifierConfig = Mapping[str, Any]
Options = Mapping[str, Any]
MAX_OPTION_SETS = 32  # verifiers kept for per-call option sets besides the configured ones


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


def _clock(config: VerifierConfig) -> dict[str, Any]:
    clock = verifier_options.clock(config)
    return {} if clock is None else {"clock": clock}


def _snp(config: VerifierConfig) -> Verifier:
    sources = import_verifier("verifier.snp.verifier", "vcek_sources_from_config")(config.get("snp_verifier"))
    options = import_verifier("verifier.snp", "SnpOptions")(**verifier_options.snp_options(config))
    verifier: Verifier = import_verifier("verifier.snp", "SnpVerifier")(
        options, vcek_sources=sources, **_clock(config)
    )
    return verifier


def _dcap(config: VerifierConfig, module: str, name: str, dcap_tee: str) -> Verifier:
    """A TDX or SGX verifier: both read `dcap_verifier`, each with its own TCB info and QE identity."""
    tee = import_verifier("verifier.dcap.collateral", dcap_tee)
    settings = verifier_options.dcap_source_settings(config)
    source = import_verifier("verifier.dcap.sources", "source_from_config")(**settings, tee=tee)
    options = import_verifier("verifier.dcap.verifier", "DcapOptions")(
        **verifier_options.dcap_options(config)
    )
    verifier: Verifier = import_verifier(module, name)(source=source, options=options, **_clock(config))
    return verifier


def _tdx(config: VerifierConfig) -> Verifier:
    return _dcap(config, "verifier.tdx", "TdxVerifier", "TDX")


def _sgx(config: VerifierConfig) -> Verifier:
    return _dcap(config, "verifier.sgx", "SgxVerifier", "SGX")


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
        self._optioned: LruCache[tuple[str, str], Verifier] = LruCache(MAX_OPTION_SETS)
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

    def _build(self, tee: str, spec: TeeSpec, config: VerifierConfig) -> Verifier:
        try:
            return spec.factory(config)
        except (ValueError, TypeError, AttributeError) as exc:
            raise VerificationError(
                "verifier_unavailable", f"the {tee} verifier configuration is invalid: {exc}"
            ) from None

    def get(self, tee: str, options: Options | None = None) -> Verifier:
        """The verifier for `tee`, with `options` (a `verifier_config` fragment) over the configured ones."""
        spec = self._spec(tee)
        if options:
            return self._get_with(tee, spec, options)
        with self._lock:
            verifier = self._verifiers.get(tee)
            if verifier is None:
                verifier = self._build(tee, spec, self._config)
                self._verifiers[tee] = verifier
        return verifier

    def _get_with(self, tee: str, spec: TeeSpec, options: Options) -> Verifier:
        try:
            config = verifier_options.merge(self._config, options)
            verifier_options.check(config)
            key = (tee, json.dumps(options, sort_keys=True))
        except (ValueError, TypeError) as exc:  # StrictConfigError and OptionsError included
            raise VerificationError("invalid_options", str(exc)) from None
        with self._lock:
            verifier = self._optioned.get(key)
            if verifier is None:
                verifier = self._build(tee, spec, config)
                self._optioned.put(key, verifier)
        return verifier

    def evaluate(
        self,
        tee: str,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
        options: Options | None = None,
    ) -> Claims:
        return self.get(tee, options).evaluate(evidence, expected_report_data, expected_init_data_hash)

    async def evaluate_async(
        self,
        tee: str,
        evidence: bytes,
        expected_report_data: bytes,
        expected_init_data_hash: bytes | None = None,
        options: Options | None = None,
    ) -> Claims:
        """As `evaluate`, letting verifiers that fetch collateral do so; CPU work runs in a thread."""
        verifier = await asyncio.to_thread(self.get, tee, options)
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
    options: Options | None = None,
) -> Claims:
    """Verify `evidence` of TEE `tee`; raises `VerificationError` (only) when it is not accepted.

    `options` is a `verifier_config` fragment for this call, e.g. `{"snp_verifier":
    {"required_vmpl": 1}}` or `{"dcap_verifier": {"accept_stale_collateral": true}, "at": "..."}`;
    a bad one is refused as `invalid_options`."""
    return _default_registry.evaluate(tee, evidence, expected_report_data, expected_init_data_hash, options)


def supported_tees() -> list[str]:
    return _default_registry.tees


__all__ = [
    "TEES",
    "AsyncVerifier",
    "Options",
    "TeeSpec",
    "VerifierConfig",
    "VerifierRegistry",
    "evaluate",
    "import_verifier",
    "supported_tees",
]
