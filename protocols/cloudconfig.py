"""The cloud-config user data the adaptor hands to a pod VM, and that `process-user-data` reads back.

Upstream (cloud-api-adaptor `util/cloudinit`) renders a fixed-shape document::

    #cloud-config

    write_files:
      - path: /run/peerpod/apf.json
        content: |
          {...}

and the pod VM decodes it strictly (`yaml.UnmarshalStrict` into `{write_files: [{path, content}]}`).
Rendering here keeps that exact shape for the usual content (text ending in one newline) and picks
chomping/indentation indicators, or a double-quoted scalar, only when needed, so that any string
survives the round trip byte for byte. Parsing walks the YAML node graph instead of constructing
Python objects: no tags are executed, duplicate and unknown keys are caught, and error messages carry
positions but never snippets of the document (it holds TLS private keys).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import yaml

PEERPOD_DIR = "/run/peerpod"
AA_CONFIG_PATH = f"{PEERPOD_DIR}/aa.toml"
CDH_CONFIG_PATH = f"{PEERPOD_DIR}/cdh.toml"
APF_CONFIG_PATH = f"{PEERPOD_DIR}/apf.json"
AUTH_FILE_PATH = f"{PEERPOD_DIR}/auth.json"
INITDATA_PATH = f"{PEERPOD_DIR}/initdata"
SCRATCH_SPACE_MARKER_PATH = f"{PEERPOD_DIR}/scratch-space.marker"

# The only paths a pod VM accepts from user data (upstream `userdata.WriteFilesList`); matched exactly.
ALLOWED_WRITE_FILES: frozenset[str] = frozenset(
    {
        AA_CONFIG_PATH,
        CDH_CONFIG_PATH,
        APF_CONFIG_PATH,
        AUTH_FILE_PATH,
        INITDATA_PATH,
        SCRATCH_SPACE_MARKER_PATH,
    }
)

HEADER = "#cloud-config"
# The largest cloud-config a pod VM accepts (decoded); the adaptor refuses to build a larger one at
# CreateVM. Clouds cap user data lower still (AWS 16 KiB, Azure 64 KiB) and say so at StartVM.
MAX_USER_DATA_BYTES = 1024 * 1024

_STR_TAG = "tag:yaml.org,2002:str"
_NULL_TAG = "tag:yaml.org,2002:null"
_TOP_LEVEL_KEYS = frozenset({"write_files"})
_ENTRY_KEYS = frozenset({"path", "content"})

# A path that YAML reads back as this very string without quoting.
_PLAIN_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")
# Characters a literal block carries verbatim: YAML printable minus line breaks other than "\n"
# ("\r", NEL, LS, PS are normalised away) and BOM.
_LITERAL_UNSAFE = re.compile(
    "[^\t\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]"
)
_QUOTE_ESCAPES = {'"': '\\"', "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\x00": "\\0"}
_CONTENT_INDENT = " " * 6


class CloudConfigError(ValueError):
    """User data that is not a cloud-config this project can render or accept."""


@dataclass(frozen=True, slots=True)
class WriteFile:
    """One `write_files` entry: an absolute path and its full text content."""

    path: str
    content: str = ""


def render_cloud_config(files: Iterable[WriteFile]) -> str:
    """Render `files` as upstream's cloud-config text; empty content omits the `content` key."""
    entries = list(files)
    if not entries:
        return HEADER + "\n"
    out = [HEADER, "", "write_files:"]
    for wf in entries:
        if not isinstance(wf.path, str) or not wf.path:
            raise CloudConfigError("write_files entry needs a non-empty string path")
        if not isinstance(wf.content, str):
            raise CloudConfigError(f"content for {wf.path!r} must be a string")
        path = wf.path if _PLAIN_PATH.fullmatch(wf.path) else _double_quoted(wf.path)
        out.append(f"  - path: {path}")
        if wf.content:
            out.append(f"    content: {_render_content(wf.content)}")
    return "\n".join(out) + "\n"


def _render_content(content: str) -> str:
    """A literal block (upstream's `|`) when it can carry `content` exactly, else a quoted scalar."""
    if _LITERAL_UNSAFE.search(content):
        return _double_quoted(content)
    body = content.rstrip("\n")
    trailing = len(content) - len(body)
    if trailing == 0:
        chomp = "-"
    elif trailing == 1 and body:
        chomp = ""
    else:
        chomp = "+"
    # Auto-detected indentation would eat leading spaces of the first non-empty line, and libyaml
    # (hence Go's yaml.v2) rejects a tab there while still detecting.
    indent = "2" if body.lstrip("\n")[:1] in (" ", "\t") else ""
    lines = content.split("\n")[:-1] if trailing else content.split("\n")
    return "\n".join([f"|{indent}{chomp}", *(_CONTENT_INDENT + line for line in lines)])


def _double_quoted(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[ch])
        elif 0xD800 <= code <= 0xDFFF:
            raise CloudConfigError("text contains a lone surrogate and cannot be encoded")
        elif not _LITERAL_UNSAFE.match(ch):
            out.append(ch)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def parse_cloud_config(text: str | bytes) -> list[WriteFile]:
    """Parse user data strictly; anything but `{write_files: [{path, content}]}` is an error.

    An empty document means no files, as upstream's decoder treats it.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CloudConfigError(f"user data is not UTF-8 (byte offset {exc.start})") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise CloudConfigError(f"user data is not valid YAML: {_describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise CloudConfigError(f"user data is not valid YAML: {type(exc).__name__}") from None
    except RecursionError:
        raise CloudConfigError("user data is nested too deeply") from None
    if root is None or _is_null(root):
        return []
    top = _mapping(root, "the top level", _TOP_LEVEL_KEYS)
    seq = top.get("write_files")
    if seq is None or _is_null(seq):
        return []
    if not isinstance(seq, yaml.SequenceNode):
        raise CloudConfigError(f"write_files must be a list {_at(seq)}")
    return [_write_file(i, item) for i, item in enumerate(seq.value)]


def _write_file(index: int, node: yaml.Node) -> WriteFile:
    where = f"write_files[{index}]"
    fields = _mapping(node, where, _ENTRY_KEYS)
    if "path" not in fields:
        raise CloudConfigError(f"{where} has no path {_at(node)}")
    path = _string(fields["path"], f"{where}.path")
    if not path:
        raise CloudConfigError(f"{where}.path is empty {_at(node)}")
    content = _string(fields["content"], f"{where}.content") if "content" in fields else ""
    return WriteFile(path=path, content=content)


def _mapping(node: yaml.Node, where: str, allowed: frozenset[str]) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise CloudConfigError(f"{where} must be a mapping {_at(node)}")
    fields: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        key = _string(key_node, f"a key in {where}")
        if key not in allowed:
            raise CloudConfigError(f"unknown key {key[:40]!r} in {where} {_at(key_node)}")
        if key in fields:
            raise CloudConfigError(f"duplicate key {key!r} in {where} {_at(key_node)}")
        fields[key] = value_node
    return fields


def _string(node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or node.tag != _STR_TAG:
        raise CloudConfigError(f"{what} must be a string {_at(node)}")
    value = node.value
    assert isinstance(value, str)
    return value


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG


def _at(node: yaml.Node) -> str:
    mark = node.start_mark
    return f"(line {mark.line + 1}, column {mark.column + 1})"


def _describe(exc: yaml.MarkedYAMLError) -> str:
    """The parser's complaint and position, without the snippet of input PyYAML would quote."""
    parts = [p for p in (exc.context, exc.problem) if p]
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return (": ".join(parts) or type(exc).__name__) + where
