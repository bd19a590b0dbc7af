"""Strict JSON decoding for untrusted input, shared by the attestation service's parsers.

`json.loads` alone accepts NaN/Infinity (not JSON) and raises RecursionError on deep nesting; the
parsers here must only ever raise their own error types, so both cases become `JsonError`.
"""

from __future__ import annotations

import json
from typing import Any


class JsonError(ValueError):
    """The text is not a strict JSON document."""


def _reject_constant(name: str) -> Any:
    raise JsonError(f"{name} is not valid JSON")


def strict_loads(data: str | bytes) -> Any:
    """Decode one JSON document (UTF-8 when given bytes)."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise JsonError(f"not UTF-8 (byte offset {exc.start})") from None
    except JsonError:
        raise
    except json.JSONDecodeError as exc:
        raise JsonError(f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except ValueError as exc:  # e.g. an integer longer than Python's digit limit
        raise JsonError(f"not usable JSON: {exc}") from None
    except RecursionError:
        raise JsonError("JSON nested too deeply") from None
