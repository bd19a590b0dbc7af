"""UnWrapKey as CDH serves it: the annotation packet (v1 or v2) names the KEK by a KBS resource URI;
the KEK comes from the KBS after attestation and unwraps the layer options."""

from __future__ import annotations

from podvm.cdh.errors import ResourceError, UnwrapError
from podvm.cdh.resources import Resources
from protocols.kbs_client.errors import KbsClientError
from protocols.kbs_client.resource_uri import parse_resource_uri
from protocols.ocicrypt import keywrap, packet
from protocols.ocicrypt.errors import OcicryptError


async def unwrap_optsdata(resources: Resources, annotation: bytes) -> bytes:
    """The layer's private options (optsdata) from its annotation packet."""
    try:
        p = packet.parse_packet(annotation)
    except OcicryptError as exc:
        raise UnwrapError(f"malwared AnnotationPacket format: {exc}") from None
    if p.provider != packet.PROVIDER_KBS:
        raise UnwrapError(f"provider {p.provider[:40]!r}: only `kbs` is supported by this CDH")
    if p.version != packet.PACKET_VERSION:
        raise UnwrapError(f"malwared AnnotationPacket format: version must be {packet.PACKET_VERSION}")
    if p.wrap_type is None or p.iv is None:
        raise UnwrapError("malwared AnnotationPacket format: no `WrapType` or `iv` given")
    if p.wrap_type not in keywrap.WRAP_TYPES:
        raise UnwrapError(f"Unknown WrapType: {p.wrap_type[:40]}")
    try:
        kid = parse_resource_uri(p.kid)
    except KbsClientError as exc:
        raise UnwrapError(f"illegal ResourceUri in `kid` field: {exc}") from None
    try:
        kek = await resources.get(str(kid))
    except ResourceError as exc:
        raise UnwrapError(f"KEK {kid}: {exc}") from None
    try:
        return keywrap.unwrap(kek, p.wrapped_data, p.iv, p.wrap_type)
    except OcicryptError as exc:
        raise UnwrapError(f"decrypt LEK using KEK failed: {exc}") from None
