"""Checking a policy that is about to be accepted, in a child process with a budget.

regorus compiles some tiny policies in exponential time (`allow := [[[[...]]]]`, 60 bytes, nested 20
deep, compiles for hours) and holds the GIL throughout, so a compile in the serving process stops
every request and even signal handling. A policy is therefore compiled first in a child process,
under a CPU limit the kernel enforces, a wall-time limit and an address-space limit, and refused
(`PolicyBudgetError`) when it needs more; only policies that passed are compiled in-process, where
evaluation stays fast. The check runs when a policy is set or loaded at start, never per request;
a policy that passed is not checked again by the same process (a default installed by every store).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verifier.policy.compile_child import OUT_OF_MEMORY
from verifier.policy.engine import PolicyError

_CHILD = Path(__file__).with_name("compile_child.py")
_PASSED_MAX = 256
_passed: dict[str, None] = {}  # digests of checks passed, oldest first
_passed_lock = threading.Lock()


class PolicyBudgetError(PolicyError):
    """The policy is larger, or takes longer or more memory to compile, than a policy may."""


@dataclass(frozen=True, slots=True)
class Budget:
    """What one policy may cost. Real policies compile in milliseconds; 60 bytes of nested
    brackets take a second at depth 14 and four at depth 16, so a second of CPU refuses those
    early and still leaves a hundred times the need of the largest policy shipped."""

    cpu_seconds: float = 1.0
    wall_seconds: float = 15.0  # the CPU limit ends a busy child first; this one a stuck child
    max_bytes: int = 1024 * 1024
    memory_bytes: int = 1024 * 1024 * 1024


DEFAULT_BUDGET = Budget()


def check_policy(
    policy: str,
    rules: Sequence[str] = (),
    extensions: Mapping[str, int] | None = None,
    budget: Budget = DEFAULT_BUDGET,
) -> None:
    """Compile `policy` (with host functions `extensions`: name -> number of arguments, and one
    evaluation of each rule over empty input) in a child process. Raises `PolicyError` with the
    engine's diagnostic when it does not compile, `PolicyBudgetError` when it is over `budget`."""
    try:
        size = len(policy.encode("utf-8"))
    except UnicodeEncodeError:
        raise PolicyError("policy is not UTF-8 text (it holds a lone surrogate)") from None
    if size > budget.max_bytes:
        raise PolicyBudgetError(f"policy is {size} bytes, more than the {budget.max_bytes} allowed")
    request = {
        "policy": policy,
        "rules": list(rules),
        "extensions": dict(extensions or {}),
        "cpu_seconds": budget.cpu_seconds,
        "memory_bytes": budget.memory_bytes,
    }
    encoded = json.dumps(request, sort_keys=True).encode("utf-8")
    digest = hashlib.sha256(encoded).hexdigest()
    with _passed_lock:
        if digest in _passed:
            return
    _run(encoded, budget)
    with _passed_lock:
        _passed[digest] = None
        while len(_passed) > _PASSED_MAX:
            del _passed[next(iter(_passed))]


def _run(request: bytes, budget: Budget) -> None:
    """One check in a child process; raises as `check_policy` says."""
    over = PolicyBudgetError(
        f"policy takes more than {budget.cpu_seconds:g} s of CPU or"
        f" {budget.memory_bytes // 2**20} MiB to compile (refused)"
    )
    try:
        done = subprocess.run(
            [sys.executable, "-I", str(_CHILD)],
            input=request,
            capture_output=True,
            timeout=budget.wall_seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise over from None
    except OSError as exc:
        raise PolicyError(f"cannot start the policy compile check: {exc.strerror or exc}") from None
    report = _report(done)
    if report is None:
        raise over
    if "error" in report:
        raise PolicyError(f"policy does not compile: {report['error']}")
    if float(report.get("cpu", 0.0)) > budget.cpu_seconds:
        raise over


def _report(done: subprocess.CompletedProcess[bytes]) -> dict[str, Any] | None:
    """The child's report; None when it was ended by a limit (a signal, or out of memory)."""
    if done.returncode < 0 or done.returncode == OUT_OF_MEMORY:
        return None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise PolicyError(f"the policy compile check failed: {reason[0][:200]}")
    try:
        report = json.loads(done.stdout)
    except ValueError:
        report = None
    if not isinstance(report, dict):
        raise PolicyError("the policy compile check gave no report")
    return report
