"""The resource policy (Rego, rule `data.policy.allow`), shared by replicas through a file.

Input is the verified token's claims; data is upstream's `{"plugin", "resource-path", "query"}`. Only
`true` allows: an undefined rule, any other value or an evaluation error refuses. The policy text
lives in one file (written atomically) that every evaluation checks for changes, so a policy set on
one replica holds on all of them. regorus engines may only be used on the thread that made them, so
compiled engines are kept per thread.

A policy is first compiled in a child process with a budget (`verifier.policy.compilecheck`) when it
is set and when it is loaded at start: some tiny policies take regorus hours to compile, holding the
GIL. A policy file that changes under a running KBS was written by a replica after that check.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import regorus

from protocols.atomicfile import atomic_write
from verifier.policy.compilecheck import DEFAULT_BUDGET, Budget, check_policy
from verifier.policy.engine import PolicyError

POLICY_ID = "resource-policy"
POLICY_RULE = "data.policy.allow"
_CACHED = 8


class ResourcePolicyError(Exception):
    """The policy does not compile, cannot be stored, or could not be evaluated."""


def _check(policy: str, budget: Budget) -> None:
    """Compile `policy` in a child process within `budget` (see the module's docstring)."""
    try:
        check_policy(policy, [POLICY_RULE], budget=budget)
    except PolicyError as exc:
        raise ResourcePolicyError(str(exc)) from None


def default_policy() -> str:
    return resources.files("kbs").joinpath("default_resource_policy.rego").read_text(encoding="utf-8")


def _diagnostic(exc: BaseException) -> str:
    return str(exc).split("\nStack backtrace:", 1)[0].strip()


def _compile(policy: str) -> regorus.Engine:
    """A compiled engine. On failure the engine is released here, before raising: an exception's
    traceback keeps its frames alive, and an engine freed later by the garbage collector could be
    freed on another thread, which regorus refuses (the engine then leaks)."""
    engine = regorus.Engine()
    try:
        engine.add_policy("resource-policy.rego", policy)
    except RuntimeError as exc:
        message = _diagnostic(exc)
    else:
        return engine
    del engine
    raise ResourcePolicyError(f"policy does not compile: {message}")


class ResourcePolicy:
    def __init__(self, path: Path | None = None, budget: Budget | None = None) -> None:
        """`path` None keeps the policy in memory; else the file is created with the default policy.
        `budget` bounds the compile check of each policy set or loaded."""
        self._path = path
        self._budget = budget or DEFAULT_BUDGET
        self._lock = threading.Lock()
        self._local = threading.local()
        self._text = default_policy()
        self._stamp: tuple[int, int] | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    atomic_write(path, self._text.encode("utf-8"))
            except OSError as exc:
                raise ResourcePolicyError(f"cannot create resource policy {path}: {exc.strerror}") from None
        try:
            _check(self.text(), self._budget)
        except ResourcePolicyError as exc:
            raise ResourcePolicyError(f"stored resource policy {path}: {exc}") from None

    def text(self) -> str:
        """The current policy (re-read when the file changed)."""
        if self._path is None:
            return self._text
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            with self._lock:
                if stamp != self._stamp:
                    self._text = self._path.read_text(encoding="utf-8")
                    self._stamp = stamp
                return self._text
        except (OSError, UnicodeDecodeError) as exc:
            raise ResourcePolicyError(f"cannot read resource policy {self._path}: {exc}") from None

    def set(self, policy: str) -> None:
        """Check `policy` in a child process, then store it. Blocks for up to the budget's wall
        time: call it off the event loop."""
        _check(policy, self._budget)
        with self._lock:
            if self._path is not None:
                try:
                    atomic_write(self._path, policy.encode("utf-8"), 0o644)
                except OSError as exc:
                    raise ResourcePolicyError(f"cannot write resource policy: {exc.strerror}") from None
            self._text = policy

    def _engine(self, policy: str) -> regorus.Engine:
        cache: dict[str, regorus.Engine] | None = getattr(self._local, "engines", None)
        if cache is None:
            cache = self._local.engines = {}
        key = hashlib.sha256(policy.encode("utf-8")).hexdigest()
        engine = cache.get(key)
        if engine is None:
            engine = _compile(policy)
            if len(cache) >= _CACHED:
                cache.pop(next(iter(cache)))
            cache[key] = engine
        return engine

    def release(self) -> None:
        """Drop this thread's compiled engines (regorus refuses to free them from another thread):
        call from each evaluating thread before it ends."""
        self._local.engines = {}

    def allows(self, claims: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        engine = self._engine(self.text()).clone()
        try:
            engine.add_data_json(json.dumps(data))
            engine.set_input_json(json.dumps(claims))
            return engine.eval_rule(POLICY_RULE) is True
        except (RuntimeError, TypeError, ValueError) as exc:
            message = _diagnostic(exc)
        del engine  # as in _compile: not through the traceback to another thread
        raise ResourcePolicyError(f"evaluating {POLICY_RULE}: {message}")
