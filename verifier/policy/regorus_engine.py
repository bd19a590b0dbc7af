"""`PolicyEngine` on regorus (PyPI `gordon-to-regorus`): Rego v1, host functions as regorus extensions.

A regorus Engine must be created, used and dropped on one thread (pyo3 `unsendable`: anything else
leaks it, with a warning). So compiled policies are cached per thread, in thread-local storage that
Python clears on the thread itself when it ends, and every call runs on its caller's thread: no
hand-off to a worker thread, which cost three times the evaluation. Evaluations run on clones of the
cached engine: about 100 us for the default policy against 500 us with a fresh compile.

`check`, for policies about to be accepted, compiles in a child process with a budget instead
(`verifier.policy.compilecheck`): some tiny policies take regorus hours to compile, holding the GIL.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import regorus

from protocols import strictjson
from verifier.policy.compilecheck import DEFAULT_BUDGET, Budget, check_policy
from verifier.policy.engine import HostFunctions, PolicyError

_CACHED_POLICIES = 32  # per thread, over every RegorusEngine
_NO_SUCH_RULE = "not a valid rule path"
_UNDEFINED_JSON = '"<undefined>"'

# Per thread: (RegorusEngine serial, policy hash) -> compiled engine. Keyed by serial, not by the
# RegorusEngine itself: an entry must never be dropped from another thread when its owner goes away;
# entries of owners gone are evicted here, on their thread, as the cache fills.
_local = threading.local()
_serials = itertools.count()


def _diagnostic(exc: BaseException) -> str:
    """regorus' message without the Rust backtrace it appends when RUST_BACKTRACE is set."""
    return str(exc).split("\nStack backtrace:", 1)[0].strip()


def _compile(policy: str, functions: HostFunctions) -> regorus.Engine:
    """A compiled engine. On failure the engine is released here, before raising: the exception's
    traceback keeps this frame alive, and the thread that finally drops the exception may not be the
    one that made the engine, which regorus refuses (the engine would leak, with a warning)."""
    engine = regorus.Engine()
    try:
        engine.add_policy("policy.rego", policy)
    except RuntimeError as exc:
        message = _diagnostic(exc)
    else:
        for name, (nargs, function) in functions.items():
            engine.add_extension(name, nargs, function)
        return engine
    del engine
    raise PolicyError(f"policy does not compile: {message}")


class _Prepared:
    """A compiled policy of this thread, analysed, with which rule paths it defines.

    regorus analyses a policy at its first evaluation, and clones made afterwards share that work:
    one throwaway evaluation (empty input) makes every evaluation on a clone about 2.5 times faster.
    That evaluation also tells which rules exist, once, instead of a failed evaluation per request:
    regorus errors are slow (with RUST_BACKTRACE set each records a backtrace: tens of ms on a deep
    stack). Each clone gets its own input; nothing else carries over."""

    __slots__ = ("defined", "engine")

    def __init__(self, engine: regorus.Engine) -> None:
        self.engine = engine
        self.defined: dict[str, bool] = {}
        engine.set_input_json("{}")

    def defines(self, rule: str) -> bool:
        known = self.defined.get(rule)
        if known is None:
            try:
                self.engine.eval_rule(rule)
                known = True
            except RuntimeError as exc:
                known = _diagnostic(exc) != _NO_SUCH_RULE
            self.defined[rule] = known
        return known


def _compiled(key: tuple[int, str], policy: str, functions: HostFunctions) -> _Prepared:
    cache: dict[tuple[int, str], _Prepared] | None = getattr(_local, "engines", None)
    if cache is None:
        cache = _local.engines = {}
    prepared = cache.get(key)
    if prepared is None:
        prepared = _Prepared(_compile(policy, functions))
        if len(cache) >= _CACHED_POLICIES:
            del cache[next(iter(cache))]
        cache[key] = prepared
    return prepared


def _evaluate(
    engine: regorus.Engine, input_doc: Mapping[str, Any], rules: Sequence[str]
) -> dict[str, Any] | str:
    """Rule -> value on `engine` (a clone), or the error message (see `_outcome`)."""
    try:
        engine.set_input_json(strictjson.dumps(input_doc).decode("utf-8"))
    except (TypeError, ValueError, RuntimeError) as exc:
        return f"policy input is not JSON: {_diagnostic(exc)}"
    results: dict[str, Any] = {}
    for rule in rules:
        try:
            text = engine.eval_rule_as_json(rule)
            # Undefined comes back as the JSON string "<undefined>"; eval_rule tells it from a rule
            # whose value really is that string.
            undefined = text == _UNDEFINED_JSON and engine.eval_rule(rule) is None
        except RuntimeError as exc:
            return f"evaluating {rule}: {_diagnostic(exc)}"
        results[rule] = None if undefined else json.loads(text)
    return results


def _outcome(
    key: tuple[int, str],
    policy: str,
    functions: HostFunctions,
    input_doc: Mapping[str, Any],
    rules: Sequence[str],
) -> dict[str, Any] | str:
    """Every rule's value (None where the policy does not define it), or the error message.

    Errors are values down here: a raised exception keeps the frames of its traceback, and with them
    this thread's engines, alive until whichever thread drops it -- which regorus refuses when that is
    not this thread (the engine leaks, with an "unsendable" warning)."""
    try:
        prepared = _compiled(key, policy, functions)
    except PolicyError as exc:
        return str(exc)
    defined = [rule for rule in rules if prepared.defines(rule)]
    results = _evaluate(prepared.engine.clone(), input_doc, defined) if defined else {}
    if isinstance(results, str):
        return results
    return {rule: results.get(rule) for rule in rules}


def _forwarder(owner: weakref.ref[RegorusEngine], name: str) -> Callable[..., Any]:
    """What regorus holds for a host function: only a weak reference back, so the engines cached per
    thread, which may outlive their owner, do not keep it (and its host functions' objects) alive."""

    def call(*args: Any) -> Any:
        engine = owner()
        if engine is None:
            raise RuntimeError("policy engine is closed")
        return engine.functions[name][1](*args)

    return call


class RegorusEngine:
    def __init__(self, functions: HostFunctions | None = None, budget: Budget = DEFAULT_BUDGET) -> None:
        """`budget` bounds the compile check of each policy (see `check`)."""
        self.functions = dict(functions or {})
        self._budget = budget
        me = weakref.ref(self)
        self._forwarders = {
            name: (nargs, _forwarder(me, name)) for name, (nargs, _) in self.functions.items()
        }
        self._serial = next(_serials)

    def check(self, policy: str) -> None:
        """Compile in a child process; `PolicyBudgetError` when over the budget."""
        extensions = {name: nargs for name, (nargs, _) in self.functions.items()}
        check_policy(policy, extensions=extensions, budget=self._budget)

    def evaluate(self, policy: str, input_doc: Mapping[str, Any], rules: Sequence[str]) -> dict[str, Any]:
        key = (self._serial, hashlib.sha256(policy.encode("utf-8")).hexdigest())
        outcome = _outcome(key, policy, self._forwarders, input_doc, rules)
        if isinstance(outcome, str):
            raise PolicyError(outcome)
        return outcome
