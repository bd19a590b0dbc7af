"""The child side of `verifier.policy.compilecheck`: compile one policy under a CPU limit, report.

Run as a script (`python -I compile_child.py`), importing only regorus, so it starts in tens of ms.
Reads `{"policy", "rules", "extensions", "cpu_seconds", "memory_bytes"}` as JSON on stdin; writes
`{"cpu": seconds}` when the policy compiled (and each rule was evaluated once over empty input, which
is when regorus analyses a policy) or `{"error": diagnostic}` when it does not compile. The kernel
ends it when it spends more than its CPU budget: SIGPROF (whose default action ends the process, with
no Python handler that would wait for regorus to let go of the GIL), RLIMIT_CPU behind it. Running
out of its address space is exit status 3.
"""

from __future__ import annotations

import contextlib
import json
import math
import resource
import signal
import sys
import time
from typing import Any

import regorus

OUT_OF_MEMORY = 3


def _limit(cpu_seconds: float, memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    soft = math.ceil(time.process_time() + cpu_seconds) + 1
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    signal.signal(signal.SIGPROF, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)


def _refuse(*args: Any) -> Any:
    raise RuntimeError("host functions are not available while checking a policy")


def _check(request: dict[str, Any]) -> dict[str, Any]:
    started = time.process_time()
    engine = regorus.Engine()
    try:
        engine.add_policy("policy.rego", request["policy"])
    except RuntimeError as exc:
        return {"error": str(exc).split("\nStack backtrace:", 1)[0].strip()}
    for name, nargs in request["extensions"].items():
        engine.add_extension(name, nargs, _refuse)
    engine.set_input_json("{}")
    for rule in request["rules"]:
        with contextlib.suppress(RuntimeError):  # only its time matters here, not its outcome
            engine.eval_rule(rule)
    return {"cpu": time.process_time() - started}


def main() -> None:
    request = json.load(sys.stdin)
    _limit(request["cpu_seconds"], request["memory_bytes"])
    try:
        report = _check(request)
    except MemoryError:
        sys.exit(OUT_OF_MEMORY)
    json.dump(report, sys.stdout)


if __name__ == "__main__":
    main()
