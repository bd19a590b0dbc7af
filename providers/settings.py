"""Configuration settings with upstream's names, read from flags and environment variables.

Every setting has the flag name and environment variable that cloud-api-adaptor uses upstream, so
existing deployments carry over. Flags win over the environment, the environment over defaults, and
an empty variable counts as unset (as upstream). All problems are reported together at start-up,
not at the first pod.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SettingValue = str | int | float | bool | list[str]


class ConfigError(Exception):
    """One or more settings are missing, malformed or contradict each other."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("invalid configuration:\n  - " + "\n  - ".join(problems))
        self.problems = list(problems)


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


_PARSERS: dict[type, Callable[[str], Any]] = {
    str: str,
    int: int,
    float: float,
    bool: _parse_bool,
    list: _parse_list,
}


@dataclass(frozen=True)
class Setting:
    """One configuration key. `flag` is upstream's flag name without the leading dash."""

    flag: str
    env: str | None
    kind: type = str
    default: SettingValue | None = None
    required: bool = False
    help: str = ""
    secret: bool = False

    @property
    def dest(self) -> str:
        return self.flag.replace("-", "_")

    def parse(self, text: str) -> SettingValue:
        value: SettingValue = _PARSERS[self.kind](text)
        return value


def add_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup, settings: Iterable[Setting]
) -> None:
    """Register each setting as `-flag` and `--flag` (upstream uses Go's single-dash flags)."""
    for setting in settings:
        env_note = f" [env {setting.env}]" if setting.env else ""
        hide_default = setting.default in (None, "") or setting.secret
        default_note = "" if hide_default else f" (default {setting.default})"
        if setting.kind is bool:
            parser.add_argument(
                f"-{setting.flag}",
                f"--{setting.flag}",
                dest=setting.dest,
                nargs="?",
                const="true",
                default=None,
                metavar="BOOL",
                help=setting.help + default_note + env_note,
            )
        else:
            parser.add_argument(
                f"-{setting.flag}",
                f"--{setting.flag}",
                dest=setting.dest,
                default=None,
                metavar=setting.env or setting.dest.upper(),
                help=setting.help + default_note + env_note,
            )


def resolve(
    settings: Iterable[Setting], flags: argparse.Namespace | None, environ: Mapping[str, str]
) -> dict[str, SettingValue | None]:
    """Values keyed by `Setting.dest`: flag, else environment, else default. Raises ConfigError."""
    values, problems = resolve_all(settings, flags, environ)
    if problems:
        raise ConfigError(problems)
    return values


def resolve_all(
    settings: Iterable[Setting], flags: argparse.Namespace | None, environ: Mapping[str, str]
) -> tuple[dict[str, SettingValue | None], list[str]]:
    """As `resolve`, but a malformed value is replaced by its default and reported in the list.

    So that the later checks still run and every problem can be reported at once.
    """
    values: dict[str, SettingValue | None] = {}
    problems: list[str] = []
    for setting in settings:
        raw = getattr(flags, setting.dest, None) if flags is not None else None
        source = f"-{setting.flag}"
        if raw is None and setting.env and environ.get(setting.env):
            # peer-pods-cm and peer-pods-secret often carry keys with "" (the chart renders them).
            raw, source = environ[setting.env], setting.env
        if raw is None:
            values[setting.dest] = setting.default
        else:
            try:
                values[setting.dest] = setting.parse(raw)
            except ValueError as exc:
                problems.append(f"{source}: {exc}")
                values[setting.dest] = setting.default
                continue
        if setting.required and values[setting.dest] in (None, "", []):
            names = f"-{setting.flag}" + (f" or {setting.env}" if setting.env else "")
            problems.append(f"{names} is required: {setting.help}")
    return values, problems
