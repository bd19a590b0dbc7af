"""Attestation policies by id, each checked by the engine before it is accepted.

Ids follow upstream: the service evaluates `<policy_id>_<tee class>` (so `default` means
`default_cpu`), and `set` takes the full id. With a directory, every policy is also a `<id>.rego` file
there, so edits survive a restart; the built-in defaults are installed without overwriting.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from verifier.policy.engine import PolicyEngine, PolicyError

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_SUFFIX = ".rego"
DEFAULT_POLICY_FILES = {"default_cpu": "default_cpu.rego"}


def builtin_policy(name: str) -> str:
    """Text of a policy shipped in this package."""
    return resources.files("verifier.policy").joinpath(name).read_text(encoding="utf-8")


def check_policy_id(policy_id: str) -> None:
    if not _ID.fullmatch(policy_id):
        raise PolicyError(
            f"policy id {policy_id[:80]!r} must be 1-128 characters of letters, digits, '_', '.', '-'"
            " starting with a letter or digit"
        )


class PolicyStore:
    def __init__(self, engine: PolicyEngine, directory: Path | None = None) -> None:
        self._engine = engine
        self._directory = directory
        self._lock = threading.Lock()
        self._policies: dict[str, str] = {}
        if directory is not None:
            self._load(directory)
        for policy_id, name in DEFAULT_POLICY_FILES.items():
            if policy_id not in self._policies:
                self.set(policy_id, builtin_policy(name))

    def _load(self, directory: Path) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            files = sorted(directory.glob("*" + _SUFFIX))
            for file in files:
                policy_id = file.name[: -len(_SUFFIX)]
                if _ID.fullmatch(policy_id):
                    self._policies[policy_id] = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot load policies from {directory}: {exc}") from None
        for policy_id, policy in self._policies.items():
            try:
                self._engine.check(policy)
            except PolicyError as exc:
                raise PolicyError(f"stored policy {policy_id!r} in {directory}: {exc}") from None

    def set(self, policy_id: str, policy: str) -> None:
        """Check, then store (replacing any policy with this id)."""
        check_policy_id(policy_id)
        self._engine.check(policy)
        with self._lock:
            if self._directory is not None:
                path = self._directory / (policy_id + _SUFFIX)
                tmp = path.with_name(path.name + ".tmp")
                try:
                    tmp.write_text(policy, encoding="utf-8")
                    tmp.replace(path)
                except OSError as exc:
                    raise PolicyError(f"cannot write policy {path}: {exc.strerror}") from None
            self._policies[policy_id] = policy

    def get(self, policy_id: str) -> str:
        with self._lock:
            policy = self._policies.get(policy_id)
        if policy is None:
            raise PolicyError(f"policy {policy_id[:80]!r} not found")
        return policy

    def list(self) -> list[str]:
        with self._lock:
            return sorted(self._policies)
