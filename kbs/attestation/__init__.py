"""How the KBS reaches its attestation service: built in (`coco_as_builtin`), or upstream's gRPC
API of a separate service (`coco_as_grpc`, `as_addr`) that several KBS front ends share."""

from kbs.attestation.base import AttestationBackend, AttestationRefused, AttestationUnavailable
from kbs.attestation.builtin import BuiltinAttestation
from kbs.attestation.grpc import GrpcAttestation

__all__ = [
    "AttestationBackend",
    "AttestationRefused",
    "AttestationUnavailable",
    "BuiltinAttestation",
    "GrpcAttestation",
]
