"""CoCo's annotation packet: what the key provider puts in a layer's
`org.opencontainers.image.enc.keys.provider.<name>` annotation.

v1 (what coco_keyprovider writes) is `{"kid", "wrapped_data", "iv", "wrap_type"}`; v2 adds `version`,
`provider` (default `kbs`), `provider_settings` and `annotations` for KMS providers. A v1 packet
parses as v2 with the defaults (guest-components `annotation_packet/{v1,v2}.rs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from protocols.ocicrypt import jsonbytes
from protocols.ocicrypt.errors import MessageFormatError

PACKET_VERSION = "0.1.0"
PROVIDER_KBS = "kbs"


@dataclass(frozen=True, slots=True)
class AnnotationPacket:
    kid: str
    wrapped_data: bytes
    iv: bytes | None = None
    wrap_type: str | None = None
    version: str = PACKET_VERSION
    provider: str = PROVIDER_KBS
    provider_settings: dict[str, Any] = field(default_factory=dict)
    annotations: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The v1 form when the packet has only v1 content (so upstream v1 readers accept it), else v2."""
        doc: dict[str, Any] = {"kid": self.kid, "wrapped_data": jsonbytes.encode(self.wrapped_data)}
        if self.iv is not None:
            doc["iv"] = jsonbytes.encode(self.iv)
        if self.wrap_type is not None:
            doc["wrap_type"] = self.wrap_type
        if self.provider != PROVIDER_KBS or self.provider_settings or self.annotations:
            doc = {
                "version": self.version,
                **doc,
                "provider": self.provider,
                "provider_settings": self.provider_settings,
                "annotations": self.annotations,
            }
        return jsonbytes.dumps(doc)


def parse_packet(raw: bytes | str) -> AnnotationPacket:
    """A v1 or v2 packet; `MessageFormatError` names the field that is wrong."""
    doc = jsonbytes.load_object(raw, "annotation packet")
    kid = jsonbytes.optional_string(doc, "kid", "annotation packet kid")
    if kid is None:
        raise MessageFormatError("annotation packet has no kid")
    if "wrapped_data" not in doc:
        raise MessageFormatError("annotation packet has no wrapped_data")
    return AnnotationPacket(
        kid=kid,
        wrapped_data=jsonbytes.decode(doc["wrapped_data"], "annotation packet wrapped_data"),
        iv=jsonbytes.decode_optional(doc, "iv", "annotation packet iv"),
        wrap_type=jsonbytes.optional_string(doc, "wrap_type", "annotation packet wrap_type"),
        version=jsonbytes.optional_string(doc, "version", "annotation packet version", PACKET_VERSION)
        or PACKET_VERSION,
        provider=jsonbytes.optional_string(doc, "provider", "annotation packet provider", PROVIDER_KBS)
        or PROVIDER_KBS,
        provider_settings=jsonbytes.optional_object(doc, "provider_settings", "provider_settings"),
        annotations=jsonbytes.optional_object(doc, "annotations", "annotation packet annotations"),
    )
