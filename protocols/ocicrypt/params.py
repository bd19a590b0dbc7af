"""The key provider's parameter string, as coco_keyprovider reads it: `::`-separated `key=value`
pairs after `provider:<name>:` (`keypath=/abs/kek::keyid=kbs:///default/key/1::algorithm=A256GCM`)."""

from __future__ import annotations

from dataclasses import dataclass

from protocols.ocicrypt.errors import MessageFormatError
from protocols.ocicrypt.keywrap import A256GCM, WRAP_TYPES

KNOWN_KEYS = frozenset({"keypath", "keyid", "algorithm", "sample"})


@dataclass(frozen=True, slots=True)
class ProviderParams:
    keypath: str | None = None
    keyid: str | None = None
    algorithm: str = A256GCM
    sample: bool = False


def parse_params(raw: bytes) -> ProviderParams:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MessageFormatError("key provider parameters are not UTF-8") from None
    values: dict[str, str] = {}
    for item in filter(None, text.split("::")):
        key, sep, value = item.partition("=")
        if not sep or key not in KNOWN_KEYS:
            raise MessageFormatError(
                f"key provider parameter {item[:60]!r} is not key=value with a key among "
                f"{', '.join(sorted(KNOWN_KEYS))}"
            )
        values[key] = value
    algorithm = values.get("algorithm", A256GCM)
    if algorithm not in WRAP_TYPES:
        raise MessageFormatError(f"algorithm must be one of {', '.join(WRAP_TYPES)}, not {algorithm[:40]!r}")
    sample = values.get("sample", "false").lower()
    if sample not in ("true", "false"):
        raise MessageFormatError("sample must be true or false")
    return ProviderParams(values.get("keypath"), values.get("keyid"), algorithm, sample == "true")
