"""Attestation policy: Rego over the verified claims, giving an AR4SI trust vector and EAR extensions."""

from verifier.policy.compilecheck import Budget, PolicyBudgetError
from verifier.policy.engine import HostFunctions, PolicyEngine, PolicyError
from verifier.policy.regorus_engine import RegorusEngine
from verifier.policy.store import PolicyStore, builtin_policy

__all__ = [
    "Budget",
    "HostFunctions",
    "PolicyBudgetError",
    "PolicyEngine",
    "PolicyError",
    "PolicyStore",
    "RegorusEngine",
    "builtin_policy",
]
