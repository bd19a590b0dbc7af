"""`<command> version` and `<command> --version` for every command of this distribution.

Upstream's commands print `<name> version <version>` followed by build details; so do ours, with the
installed `peerpods` distribution's version (one source of truth: pyproject.toml).
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence

DISTRIBUTION = "peerpods"
WORDS = ("version", "-version", "--version")


def package_version() -> str:
    # Imported here: importlib.metadata (email, zipfile, ...) is a good part of every command's
    # start-up, and only `version` needs it.
    import importlib.metadata

    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"  # run from a source tree that was never installed


def version_text(prog: str) -> str:
    return f"{prog} version {package_version()}\n  python: {platform.python_version()}"


class _PrintVersion(argparse.Action):
    """argparse's own version action reflows the text onto one line; this prints it as it is."""

    def __init__(self, option_strings: Sequence[str], dest: str) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help="print the version")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(version_text(parser.prog))
        parser.exit()


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`parser.parse_args(argv)` that also answers `version`, `-version` and `--version`.

    The word `version` counts only as the first argument, as upstream's `cloud-api-adaptor version`;
    the flags are listed in `--help` and work anywhere on the command line.
    """
    parser.add_argument("-version", "--version", action=_PrintVersion)
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["version"]:
        print(version_text(parser.prog))
        raise SystemExit(0)
    return parser.parse_args(args)
