"""Strict configuration keys: a misspelt key is an error naming it and the closest known key.

Upstream's loaders (serde with `deny_unknown_fields` in most places) refuse unknown keys; silently
ignoring one (`insecure_htpp = true`) leaves a deployment running with a default its operator meant to
change. A `Table` lists the keys a parsed TOML/JSON table may hold; `check_keys` walks a document
against it and raises one `StrictConfigError` listing every problem found, not just the first.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias


@dataclass(frozen=True, slots=True)
class Table:
    """A table's known keys; each maps to the spec of its value (`None`: any value, unchecked).

    `other` is the spec of keys not listed, for tables keyed by name (`None` with `open=True`: any).
    """

    keys: Mapping[str, Spec] = field(default_factory=dict)
    open: bool = False
    other: Spec = None


@dataclass(frozen=True, slots=True)
class ArrayOf:
    """An array of tables (`[[plugins]]`), each checked against `table`."""

    table: Table


Spec: TypeAlias = "Table | ArrayOf | None"


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem: `key` in the table at `path` ("" for the top level)."""

    path: str
    key: str
    reason: str
    suggestion: str | None = None

    def __str__(self) -> str:
        where = f"{self.path}.{self.key}" if self.path else self.key
        hint = f" (did you mean {self.suggestion!r}?)" if self.suggestion else ""
        return f"{where}: {self.reason}{hint}"


class StrictConfigError(ValueError):
    """Unknown keys or misplaced values; `problems` holds each, the message one line per problem."""

    def __init__(self, problems: list[ConfigProblem], source: str = "configuration") -> None:
        self.problems = tuple(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {problem}" for problem in problems))


def _printable(key: str) -> str:
    """The key as it may appear in a message: bounded and without control characters."""
    text = key if key.isprintable() else key.encode("unicode_escape").decode("ascii")
    return text[:60]


def find_problems(doc: Mapping[str, Any], table: Table, path: str = "") -> list[ConfigProblem]:
    """Every unknown key and every value that should be a table (or array of tables) but is not."""
    problems: list[ConfigProblem] = []
    for key, value in doc.items():
        if key in table.keys:
            spec = table.keys[key]
        elif table.open or table.other is not None:
            spec = table.other
        else:
            close = difflib.get_close_matches(key, list(table.keys), n=1, cutoff=0.6)
            problems.append(ConfigProblem(path, _printable(key), "unknown key", close[0] if close else None))
            continue
        problems.extend(_check_value(value, spec, f"{path}.{key}" if path else key, path, key))
    return problems


def _check_value(value: Any, spec: Spec, where: str, path: str, key: str) -> list[ConfigProblem]:
    if isinstance(spec, Table):
        if not isinstance(value, Mapping):
            return [ConfigProblem(path, _printable(key), "must be a table")]
        return find_problems(value, spec, where)
    if isinstance(spec, ArrayOf):
        if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
            return [ConfigProblem(path, _printable(key), "must be an array of tables")]
        problems: list[ConfigProblem] = []
        for index, item in enumerate(value):
            problems.extend(find_problems(item, spec.table, f"{where}[{index}]"))
        return problems
    return []


def check_keys(doc: Mapping[str, Any], table: Table, source: str = "configuration") -> None:
    """Raise StrictConfigError listing every problem in `doc`; `source` names the file in messages."""
    problems = find_problems(doc, table)
    if problems:
        raise StrictConfigError(problems, source)
