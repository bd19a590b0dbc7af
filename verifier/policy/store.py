"""Attestation policies by id, each checked by the engine before it is accepted.

Ids follow upstream: the service evaluates `<policy_id>_<tee class>` (so `default` means
`default_cpu`), and `set` takes the full id. With a directory, every policy is a `<id>.rego` file
there, so edits survive a restart, and the directory is the truth: `get` re-reads a file whose stamp
changed, so a policy set through one replica sharing the directory holds on every replica at its next
use. The built-in defaults are installed without overwriting.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from pathlib import Path

from verifier import sharedfile
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
        self._policies: dict[str, str] = {}  # without a directory
        self._read: dict[str, tuple[sharedfile.Stamp, str]] = {}  # with one: as last read
        if directory is not None:
            self._check_stored(directory)
        stored = set(self.list())
        for policy_id, name in DEFAULT_POLICY_FILES.items():
            if policy_id not in stored:
                self.set(policy_id, builtin_policy(name))

    def _check_stored(self, directory: Path) -> None:
        """Fail at start, not at the first attestation, when a stored policy does not compile."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PolicyError(f"cannot create policy directory {directory}: {exc.strerror}") from None
        for policy_id in self.list():
            try:
                self._engine.check(self.get(policy_id))
            except PolicyError as exc:
                raise PolicyError(f"stored policy {policy_id!r} in {directory}: {exc}") from None

    def set(self, policy_id: str, policy: str) -> None:
        """Check, then store (replacing any policy with this id)."""
        check_policy_id(policy_id)
        self._engine.check(policy)
        if self._directory is None:
            with self._lock:
                self._policies[policy_id] = policy
            return
        path = self._directory / (policy_id + _SUFFIX)
        try:
            sharedfile.replace(path, policy.encode("utf-8"))
        except OSError as exc:
            raise PolicyError(f"cannot write policy {path}: {exc.strerror}") from None

    def get(self, policy_id: str) -> str:
        if self._directory is None:
            with self._lock:
                policy = self._policies.get(policy_id)
        else:
            policy = self._get_stored(self._directory, policy_id) if _ID.fullmatch(policy_id) else None
        if policy is None:
            raise PolicyError(f"policy {policy_id[:80]!r} not found")
        return policy

    def _get_stored(self, directory: Path, policy_id: str) -> str | None:
        path = directory / (policy_id + _SUFFIX)
        try:
            current = sharedfile.stamp(path)
            with self._lock:
                known = self._read.get(policy_id)
            if known is not None and known[0] == current:
                return known[1]
            read, data = sharedfile.read(path)
            text = data.decode("utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(f"cannot read policy {path}: {exc}") from None
        with self._lock:
            self._read[policy_id] = (read, text)
        return text

    def list(self) -> list[str]:
        if self._directory is None:
            with self._lock:
                return sorted(self._policies)
        try:
            names = [file.name[: -len(_SUFFIX)] for file in self._directory.glob("*" + _SUFFIX)]
        except OSError as exc:
            raise PolicyError(f"cannot list policies in {self._directory}: {exc.strerror}") from None
        return sorted(name for name in names if _ID.fullmatch(name))
