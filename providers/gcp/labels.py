"""How our tags become Compute Engine labels, and where the exact ids are kept.

GCP labels allow only lowercase letters, digits, `_` and `-`, at most 63 characters, and a key must
start with a letter. The mapping: lowercase, every other character becomes `_`, cut to 63
characters; a key that then does not start with a letter is rejected rather than invented. So
`peerpods.owner` is the label `peerpods_owner` and `peerpods.sandbox-id` is `peerpods_sandbox-id`.

The mapping loses information (case, characters, and the 64th hex digit of a Kata sandbox id), so
labels are only used to *find* instances (the list filter). The exact owner and sandbox ids are
also written as instance metadata items (`peerpods-owner`, `peerpods-sandbox-id`), which have no
such limits, and those are what ownership and crash-retry decisions compare.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from providers.base import OWNER_TAG, SANDBOX_TAG

LABEL_MAX = 63
_NOT_LABEL_CHAR = re.compile(r"[^a-z0-9_-]")
_NOT_METADATA_CHAR = re.compile(r"[^A-Za-z0-9_-]")


def label_value(text: str) -> str:
    """`text` in GCP label value syntax (lossy: see the module docstring)."""
    return _NOT_LABEL_CHAR.sub("_", text.lower())[:LABEL_MAX]


def label_key(text: str) -> str:
    """`text` in GCP label key syntax; ValueError if it cannot start with a lowercase letter."""
    key = label_value(text)
    if not key or not key[0].isalpha() or not key[0].isascii():
        raise ValueError(f"label key {text!r} must start with a letter (GCP label syntax)")
    return key


def metadata_key(tag: str) -> str:
    """A tag key as a metadata item key (letters, digits, `_`, `-`)."""
    return _NOT_METADATA_CHAR.sub("-", tag)


OWNER_LABEL = label_key(OWNER_TAG)
SANDBOX_LABEL = label_key(SANDBOX_TAG)
OWNER_METADATA = metadata_key(OWNER_TAG)
SANDBOX_METADATA = metadata_key(SANDBOX_TAG)


def to_labels(tags: Mapping[str, str]) -> dict[str, str]:
    """Free-form tags as labels; ValueError naming the first key that cannot be mapped."""
    return {label_key(key): label_value(value) for key, value in tags.items()}


def parse_tags(entries: list[str]) -> dict[str, str]:
    """`TAGS` entries `key=value` (upstream syntax) as labels; ValueError for a malformed entry."""
    tags: dict[str, str] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"TAGS entry {entry!r} is not key=value")
        tags[key.strip()] = value.strip()
    return to_labels(tags)


def owned_labels(extra: Mapping[str, str], owner: str, sandbox_id: str) -> dict[str, str]:
    """The labels of a new instance: the extra ones, then ours (which win on a clash)."""
    return {**extra, OWNER_LABEL: label_value(owner), SANDBOX_LABEL: label_value(sandbox_id)}
