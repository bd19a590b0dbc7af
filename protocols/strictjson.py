"""Strict JSON for untrusted input, shared by the KBS, the attestation service and the guest side.

Python's `json` accepts documents that serde_json (upstream's parser) refuses and that cannot be used
later on: a request that parses here would fail deep inside a handler instead (orjson refuses to
re-serialize lone surrogates and integers beyond 64 bits, `1e999` becomes an infinite expiry time).
So this loader refuses, up front and with `StrictJsonError` only:

* NaN, Infinity, and numbers that overflow a double (`1e999`);
* integers outside the 64-bit range serde_json reads (i64 and u64);
* strings with a lone UTF-16 surrogate (`"\\ud800"`): not Unicode text;
* nesting deeper than 128 (serde_json's default limit);
* an object with the same key twice (parsers disagree on which one wins).

Most documents take a fast path: orjson (which already refuses NaN, overflowing numbers, lone
surrogates and invalid UTF-8) parses them. A duplicate key, which orjson keeps silently (the last
one winning), shows as a missing `:`: every member of an object is one `:` in the text, and every
other `:` is inside a string; re-encoding the parsed value gives one `:` per member kept and the
strings' own. So when the two counts agree and no `:` was written as an escape (which the text
would not show), no member was dropped. An integer beyond 64 bits, which orjson reads as a float,
can only be there when the text has a run of 19 digits and the value a float. Anything else -- an
orjson refusal, a count that differs, a possible 64-bit overflow -- goes the exact way below, which
also words the refusal.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

MAX_DEPTH = 128
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
_INT_DIGITS = len(str(INT_MAX)) + 1  # a sign and 20 digits
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_COLON_ESCAPE = re.compile(rb"\\u003[aA]")
# Integers of up to 18 digits are all in range: the per-integer check runs only when 19 digits in
# a row appear somewhere (found by mapping every digit to "0": a regex takes 30 times longer).
_DIGITS_TO_ZERO = str.maketrans("123456789", "000000000")
_LONG_DIGITS = "0" * 19
_BYTES_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS_BYTES = _LONG_DIGITS.encode()
_SURROGATE = "not usable JSON: a string holds a lone UTF-16 surrogate (not Unicode)"
_TOO_DEEP = f"not usable JSON: nested too deeply (more than {MAX_DEPTH} levels)"


class StrictJsonError(ValueError):
    """The text is not a JSON document this project accepts; the message says why (quoting no more
    than a duplicate key's first 40 characters)."""


def _number_int(text: str) -> int:
    value = int(text) if len(text) <= _INT_DIGITS else None
    if value is None or not INT_MIN <= value <= INT_MAX:
        raise StrictJsonError("not usable JSON: an integer outside the 64-bit range")
    return value


def _number_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise StrictJsonError("not usable JSON: a number too large for a double")
    return value


def _constant(name: str) -> Any:
    raise StrictJsonError(f"{name} is not valid JSON")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictJsonError(f"duplicate field {key[:40]!r}")
        out[key] = value
    return out


def _check_tree(value: Any, strings: bool) -> None:
    """Nesting depth and, when `strings`, lone surrogates in keys and strings (iteratively: no recursion)."""
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth >= MAX_DEPTH:
                raise StrictJsonError(_TOO_DEEP)
            items = node.values() if isinstance(node, dict) else node
            stack.extend((item, depth + 1) for item in items)
            if strings and isinstance(node, dict):
                stack.extend((key, depth + 1) for key in node)
        elif strings and isinstance(node, str) and not node.isascii():
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                raise StrictJsonError(_SURROGATE) from None


def _holds_float(value: Any) -> bool:
    """Whether any number in the tree is a float (iteratively: the depth is not checked yet)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if type(node) is float:
            return True
        if type(node) is dict:
            stack.extend(node.values())
        elif type(node) is list:
            stack.extend(node)
    return False


def _fast(data: bytes | str) -> tuple[bool, Any]:
    """(True, value) when orjson's reading is the strict one (see the module's docstring)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return False, None
    if _LONG_DIGITS_BYTES in raw.translate(_BYTES_TO_ZERO) and _holds_float(value):
        return False, None  # perhaps an integer beyond 64 bits, which orjson reads as a float
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        # before re-encoding: orjson writes no more than 255 levels (and orjson refused any lone
        # surrogate already)
        _check_tree(value, strings=False)
    if raw.count(b":") != orjson.dumps(value).count(b":") or _COLON_ESCAPE.search(raw) is not None:
        return False, None
    return True, value


def loads(data: bytes | str) -> Any:
    """One strict JSON document (UTF-8 when given bytes)."""
    fast, value = _fast(data)
    return value if fast else exact_loads(data)


def exact_loads(data: bytes | str) -> Any:
    """`loads` the slow, exact way (Python's parser with checks): what the fast path must agree with."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        if isinstance(data, str):
            data.encode("utf-8")  # a str may already carry a lone surrogate
    except UnicodeDecodeError as exc:
        raise StrictJsonError(f"not UTF-8 (byte offset {exc.start})") from None
    except UnicodeEncodeError:
        raise StrictJsonError(_SURROGATE) from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_number_int if _LONG_DIGITS in text.translate(_DIGITS_TO_ZERO) else None,
            parse_float=_number_float,
            parse_constant=_constant,
        )
    except json.JSONDecodeError as exc:
        raise StrictJsonError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise StrictJsonError(_TOO_DEEP) from None
    surrogates = _SURROGATE_ESCAPE.search(text) is not None
    if surrogates or text.count("[") + text.count("{") > MAX_DEPTH:
        _check_tree(value, surrogates)
    return value


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as serde_json writes it: orjson, or Python's encoder for what orjson does
    not take (integers beyond 64 bits, keys that are not strings)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
