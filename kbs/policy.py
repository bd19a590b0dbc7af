"""The resource policy (Rego, rule `data.policy.allow`), shared by replicas through the storage.

Input is the verified token's claims; data is upstream's `{"plugin", "resource-path", "query"}`. Only
`true` allows: an undefined rule, any other value or an evaluation error refuses. The policy text is
upstream's key `resource-policy` in the `kbs` namespace, read at every evaluation (compiled engines
are cached by the text's digest), so a policy set on one replica holds on all of them at their next
request. regorus engines may only be used on the thread that made them, so they are kept per thread.

A policy is first compiled in a child process with a budget (`verifier.policy.compilecheck`) when it
is set and when it is loaded at start: some tiny policies take regorus hours to compile, holding the
GIL. A policy that changes under a running KBS was stored by a replica after that check. Storage
errors (`kbs.storage.StorageError`) pass through, so an unreachable backend is told from a refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Mapping
from importlib import resources
from typing import Any

import regorus

from kbs.storage import KeyValueStorage
from protocols import strictjson
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
    def __init__(self, storage: KeyValueStorage, budget: Budget | None = None) -> None:
        """`storage`: the `kbs` namespace. `budget` bounds the compile check of each policy set or
        loaded."""
        self._storage = storage
        self._budget = budget or DEFAULT_BUDGET
        self._local = threading.local()

    async def load(self) -> None:
        """At start: store the default policy unless one is stored, and check the stored one."""
        await self._storage.set(POLICY_ID, default_policy().encode("utf-8"), overwrite=False)
        try:
            await asyncio.to_thread(_check, await self.text(), self._budget)
        except ResourcePolicyError as exc:
            raise ResourcePolicyError(
                f"stored resource policy ({self._storage.namespace}/{POLICY_ID}): {exc}"
            ) from None

    async def text(self) -> str:
        """The current policy, as stored now (the default when none is)."""
        stored = await self._storage.get(POLICY_ID)
        if stored is None:
            return default_policy()
        try:
            return stored.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ResourcePolicyError(f"stored resource policy is not UTF-8: {exc}") from None

    async def set(self, policy: str) -> None:
        """Check `policy` in a child process (up to the budget's wall time, off the event loop),
        then store it."""
        await asyncio.to_thread(_check, policy, self._budget)
        await self._storage.set(POLICY_ID, policy.encode("utf-8"))

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

    async def allows(self, claims: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        return self.evaluate(await self.text(), claims, data)

    def evaluate(self, policy: str, claims: Mapping[str, Any], data: Mapping[str, Any]) -> bool:
        engine = self._engine(policy).clone()
        try:
            engine.add_data_json(strictjson.dumps(data).decode("utf-8"))
            engine.set_input_json(strictjson.dumps(claims).decode("utf-8"))
            return engine.eval_rule(POLICY_RULE) is True
        except (RuntimeError, TypeError, ValueError) as exc:
            message = _diagnostic(exc)
        del engine  # as in _compile: not through the traceback to another thread
        raise ResourcePolicyError(f"evaluating {POLICY_RULE}: {message}")
