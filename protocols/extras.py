"""Which pip extra brings a command's third-party dependencies, and a one-line error naming it.

Each command's heavy imports (the Rego engine, a cloud SDK, grpcio) come with an extra of the
`peerpods` distribution. A plain `pip install peerpods` must still give a user who runs such a
command a message that says what to install, not an ImportError traceback.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

# Top-level packages of this distribution: a missing one is a broken install, not a missing extra.
_OWN_PACKAGES = frozenset(
    {"protocols", "adaptor", "providers", "podvm", "kbs", "verifier", "shimdriver", "cluster"}
)


class MissingExtraError(ImportError):
    """A third-party module a command needs is absent; `extra` is what brings it."""

    def __init__(self, extra: str, module: str) -> None:
        super().__init__(
            f"the Python module {module!r} is not installed; it comes with the {extra!r} extra: "
            f"pip install 'peerpods[{extra}]'"
        )
        self.extra = extra
        self.module = module


def import_with_extra(module: str, extra: str) -> ModuleType:
    """`importlib.import_module(module)`, turning a missing third-party module into MissingExtraError."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or missing.partition(".")[0] in _OWN_PACKAGES:
            raise
        raise MissingExtraError(extra, missing) from exc


def launcher(prog: str, module: str, extra: str) -> Callable[[Sequence[str] | None], None]:
    """A console-script entry point that imports `module` and runs its `main` (with `argv` when
    given, as the command's own main takes it), or exits with status 2 and one line naming the
    extra to install."""

    def main(argv: Sequence[str] | None = None) -> None:
        try:
            target = import_with_extra(module, extra)
        except MissingExtraError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            sys.exit(2)
        # The command's exit status (2 for a bad configuration).
        sys.exit(target.main() if argv is None else target.main(list(argv)))

    return main
