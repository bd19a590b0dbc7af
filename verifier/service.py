"""The attestation service in-process: evidence -> verifier claims -> policy -> signed EAR token.

This is what the KBS calls directly and what the REST and gRPC servers wrap. Pipeline per request (as
Trustee's): verify the evidence against the expected report data / init data digest; arrange the claims
as annotated evidence (`<tee>`, `report_data`, `init_data`, `runtime_data_claims`, `init_data_claims`);
evaluate policy `<policy_id>_<tee class>` for `data.policy.trust_claims` and `data.policy.extensions`,
with `query_reference_value(name)` answered by the RVPS; one appraisal per attester (`cpu0`, ...);
sign. Methods are thread-safe; asyncio callers use the `_async` variants, which keep CPU work off
the event loop and let verifiers that can fetch missing collateral (TDX, SGX) do so.

Deliberate difference from upstream: runtime data is required (upstream skips the report-data check
when it is absent); evidence not bound to anything is refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verifier.api import VerifierRegistry
from verifier.base import Claims
from verifier.binding import (
    DEFAULT_HASH_ALGORITHM,
    BindingError,
    InitDataInput,
    RuntimeData,
    expected_init_data,
    expected_report_data,
)
from verifier.ear import TRUST_CLAIMS, EarError, EarSigner, TokenSettings, appraisal, ear_claims
from verifier.policy import HostFunctions, PolicyEngine, PolicyError, PolicyStore, RegorusEngine
from verifier.rvps import ReferenceValueStore

TRUST_CLAIMS_RULE = "data.policy.trust_claims"
EXTENSIONS_RULE = "data.policy.extensions"
DEFAULT_POLICY_ID = "default"


class RequestError(ValueError):
    """An attestation request is malformed (no evidence, no runtime data, bad policy id list...)."""


@dataclass(frozen=True, slots=True)
class VerificationRequest:
    """Evidence of one attester (upstream `VerificationRequest`); `evidence` is the evidence JSON."""

    tee: str
    evidence: bytes
    runtime_data: RuntimeData | None
    init_data: InitDataInput | None = None
    runtime_data_hash_algorithm: str = DEFAULT_HASH_ALGORITHM


@dataclass(frozen=True, slots=True)
class _Bound:
    """What one request's evidence must match, and the claims the match will reveal."""

    report_data: bytes
    runtime_claims: Any
    init_digest: bytes | None
    init_claims: Any
    tee_class: str


@dataclass(frozen=True, slots=True)
class _Attested:
    tee: str
    tee_class: str
    annotated_evidence: dict[str, Any]


@dataclass
class ServiceSettings:
    token: TokenSettings = field(default_factory=TokenSettings)
    clock: Callable[[], float] = time.time


class AttestationService:
    def __init__(
        self,
        *,
        rvps: ReferenceValueStore | None = None,
        signer: EarSigner | None = None,
        verifiers: VerifierRegistry | None = None,
        settings: ServiceSettings | None = None,
        policy_dir: Path | None = None,
        engine: Callable[[HostFunctions], PolicyEngine] = RegorusEngine,
    ) -> None:
        """Defaults: in-memory RVPS and policies (with the built-in `default_cpu`), an ephemeral
        signing key, every TEE, regorus. `engine` builds the policy engine from the host functions."""
        self.rvps = rvps if rvps is not None else ReferenceValueStore()
        self.signer = signer if signer is not None else EarSigner.ephemeral()
        self.verifiers = verifiers if verifiers is not None else VerifierRegistry()
        self.settings = settings if settings is not None else ServiceSettings()
        self._engine = engine(self.host_functions())
        self.policies = PolicyStore(self._engine, policy_dir)

    def host_functions(self) -> HostFunctions:
        """Functions policies may call: `query_reference_value(name)` (null when absent or expired)."""
        return {"query_reference_value": (1, self._query_reference_value)}

    def _query_reference_value(self, name: Any) -> Any:
        if not isinstance(name, str):
            raise TypeError("query_reference_value takes a reference value name (a string)")
        return self.rvps.query(name, refresh=False)  # `_appraise` refreshed once for all its queries

    # ---- attestation

    def attest(
        self,
        tee: str,
        evidence: bytes,
        runtime_data: RuntimeData,
        init_data: InitDataInput | None = None,
        policy_ids: Sequence[str] = (DEFAULT_POLICY_ID,),
        runtime_data_hash_algorithm: str = DEFAULT_HASH_ALGORITHM,
    ) -> str:
        """One attester's evidence -> EAR token (what the KBS `/attest` needs)."""
        request = VerificationRequest(tee, evidence, runtime_data, init_data, runtime_data_hash_algorithm)
        return self.evaluate([request], policy_ids)

    async def attest_async(
        self,
        tee: str,
        evidence: bytes,
        runtime_data: RuntimeData,
        init_data: InitDataInput | None = None,
        policy_ids: Sequence[str] = (DEFAULT_POLICY_ID,),
        runtime_data_hash_algorithm: str = DEFAULT_HASH_ALGORITHM,
    ) -> str:
        """`attest` for asyncio callers: CPU work in threads, collateral fetched when a verifier can."""
        request = VerificationRequest(tee, evidence, runtime_data, init_data, runtime_data_hash_algorithm)
        return await self.evaluate_async([request], policy_ids)

    def evaluate(self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str] = ()) -> str:
        """Verify every request, appraise each attester with the first policy id ("default" when none)."""
        attested = []
        for request in _non_empty(requests):
            bound = self._bind(request)
            claims = self.verifiers.evaluate(
                request.tee, request.evidence, bound.report_data, bound.init_digest
            )
            attested.append(self._annotate(request, bound, claims))
        return self._issue(attested, policy_ids)

    async def evaluate_async(
        self, requests: Sequence[VerificationRequest], policy_ids: Sequence[str] = ()
    ) -> str:
        attested = []
        for request in _non_empty(requests):
            bound = self._bind(request)
            claims = await self.verifiers.evaluate_async(
                request.tee, request.evidence, bound.report_data, bound.init_digest
            )
            attested.append(self._annotate(request, bound, claims))
        return await asyncio.to_thread(self._issue, attested, policy_ids)

    def appraise(self, tee: str, claims: Claims, policy_id: str = DEFAULT_POLICY_ID) -> dict[str, Any]:
        """The appraisal (EAR submod: status, trust vector, annotated evidence) of claims a verifier
        gave, under policy `<policy_id>_<tee class>`, without a token (`attestation-service verify`)."""
        annotated = annotate(claims, tee, None, None, verbose=True)
        return self._appraise(_Attested(tee, self.verifiers.tee_class(tee), annotated), policy_id)

    def _bind(self, request: VerificationRequest) -> _Bound:
        if request.runtime_data is None:
            raise RequestError(f"{request.tee}: runtime data is required to check the evidence's report data")
        try:
            report_data, runtime_claims = expected_report_data(
                request.runtime_data, request.runtime_data_hash_algorithm
            )
            init_digest, init_claims = expected_init_data(request.init_data)
        except BindingError as exc:
            raise RequestError(f"{request.tee}: {exc}") from None
        return _Bound(
            report_data, runtime_claims, init_digest, init_claims, self.verifiers.tee_class(request.tee)
        )

    def _annotate(self, request: VerificationRequest, bound: _Bound, claims: Claims) -> _Attested:
        verbose = self.settings.token.verbose_token
        annotated = annotate(claims, request.tee, bound.init_claims, bound.runtime_claims, verbose)
        return _Attested(request.tee, bound.tee_class, annotated)

    def _issue(self, attested: Sequence[_Attested], policy_ids: Sequence[str]) -> str:
        policy_id = policy_ids[0] if policy_ids else DEFAULT_POLICY_ID
        submods: dict[str, dict[str, Any]] = {}
        counters: dict[str, int] = {}
        for item in attested:
            index = counters.get(item.tee_class, 0)
            counters[item.tee_class] = index + 1
            submods[f"{item.tee_class}{index}"] = self._appraise(item, policy_id)
        claims = ear_claims(submods, self.settings.token, int(self.settings.clock()))
        return self.signer.sign(claims)

    def _appraise(self, item: _Attested, policy_id: str) -> dict[str, Any]:
        full_id = f"{policy_id}_{item.tee_class}"
        policy = self.policies.get(full_id)
        self.rvps.refresh()
        results = self._engine.evaluate(policy, item.annotated_evidence, [TRUST_CLAIMS_RULE, EXTENSIONS_RULE])
        vector = _trust_vector(results[TRUST_CLAIMS_RULE], full_id)
        extensions = _extensions(results[EXTENSIONS_RULE], full_id)
        try:
            return appraisal(vector, policy_id, item.annotated_evidence, extensions)
        except EarError as exc:
            raise PolicyError(f"policy {full_id!r}: {exc}") from None

    # ---- policies, reference values, keys

    def set_policy(self, policy_id: str, policy: str) -> None:
        self.policies.set(policy_id, policy)

    def get_policy(self, policy_id: str) -> str:
        return self.policies.get(policy_id)

    def list_policies(self) -> list[str]:
        return self.policies.list()

    def register_reference_value(self, message: str | bytes) -> list[str]:
        return self.rvps.register(message)

    def query_reference_value(self, name: str) -> Any | None:
        return self.rvps.query(name)

    def jwks(self) -> dict[str, Any]:
        return self.signer.jwks()

    def challenge(self, tee: str, tee_params: str) -> str:
        """Supplemental challenge (upstream `/challenge`); none of the TEEs here needs one: ""."""
        self.verifiers.tee_class(tee)  # unknown TEE -> VerificationError
        return ""


def _non_empty(requests: Sequence[VerificationRequest]) -> Sequence[VerificationRequest]:
    if not requests:
        raise RequestError("no verification requests given")
    return requests


def annotate(
    claims: Claims, tee: str, init_data_claims: Any, runtime_data_claims: Any, verbose: bool
) -> dict[str, Any]:
    """Upstream's `transform_claims`: `init_data`/`report_data` move to the top (with their claims),
    the rest goes under the TEE name. Without `verbose`, `additional-evidence` is left out."""
    rest = dict(claims)
    annotated: dict[str, Any] = {}
    if "init_data" in rest:
        annotated["init_data"] = rest.pop("init_data")
        annotated["init_data_claims"] = init_data_claims
    if "report_data" in rest:
        annotated["report_data"] = rest.pop("report_data")
        if not verbose and isinstance(runtime_data_claims, Mapping):
            runtime_data_claims = {k: v for k, v in runtime_data_claims.items() if k != "additional-evidence"}
        annotated["runtime_data_claims"] = runtime_data_claims
    annotated[tee] = rest
    return annotated


def _trust_vector(result: Any, policy_id: str) -> dict[str, int]:
    """The policy's trust claims; undefined means "no claim" on every one (as upstream)."""
    if result is None:
        return dict.fromkeys(TRUST_CLAIMS, 0)
    if not isinstance(result, dict):
        kind = type(result).__name__
        raise PolicyError(f"policy {policy_id!r}: trust_claims must be an object, got {kind}")
    return result


def _extensions(result: Any, policy_id: str) -> dict[str, Any]:
    """`extensions` = [{"name", "key", "value"}] -> name -> value (rust-ear registers name and key)."""
    if result is None:
        return {}
    if not isinstance(result, list):
        raise PolicyError(f"policy {policy_id!r}: extensions must be a list")
    extensions: dict[str, Any] = {}
    keys: set[int] = set()
    for item in result:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "value" not in item:
            raise PolicyError(f"policy {policy_id!r}: an extension needs 'name' (string), 'key' and 'value'")
        key = item.get("key")
        if isinstance(key, bool) or not isinstance(key, int):
            raise PolicyError(f"policy {policy_id!r}: extension {item['name']!r} key must be an integer")
        if item["name"] in extensions or key in keys:
            raise PolicyError(f"policy {policy_id!r}: extension {item['name']!r} or key {key} given twice")
        extensions[item["name"]] = item["value"]
        keys.add(key)
    return extensions
