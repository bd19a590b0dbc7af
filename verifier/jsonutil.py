"""Strict JSON decoding for the attestation service's parsers: the loader the KBS uses too
(`protocols.strictjson`), so evidence the KBS accepted is never read differently here."""

from __future__ import annotations

from protocols.strictjson import StrictJsonError as JsonError
from protocols.strictjson import loads as strict_loads

__all__ = ["JsonError", "strict_loads"]
