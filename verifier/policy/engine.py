"""The small interface the attestation service needs from a Rego engine, so the engine can be swapped."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

# A host function callable from policies: name -> (number of arguments, implementation).
HostFunctions = Mapping[str, tuple[int, Callable[..., Any]]]


class PolicyError(Exception):
    """A policy did not compile, could not be evaluated, or gave a result of the wrong shape."""


class PolicyEngine(Protocol):
    """Compiles and evaluates policies; host functions are fixed when the engine is built."""

    def check(self, policy: str) -> None:
        """Raise `PolicyError` (with the engine's diagnostic) when `policy` does not compile."""
        ...

    def evaluate(self, policy: str, input_doc: Mapping[str, Any], rules: Sequence[str]) -> dict[str, Any]:
        """Evaluate each rule path (e.g. "data.policy.trust_claims") over `input_doc`.

        Returns rule -> JSON value; a rule the policy does not define, or whose value is undefined for
        this input, maps to None.
        """
        ...
