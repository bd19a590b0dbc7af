"""Image signature policy: containers-policy.json(5) with CoCo's extensions, as image-rs applies it
before any layer is downloaded.

Requirements: `insecureAcceptAnything`, `reject`, `sigstoreSigned` (cosign, keyed: `keyData` = base64
PEM, or `keyPath` = a file or a `kbs:///` resource; the signature is the `sha256-<digest>.sig` tag) and
`signedBy` (GPG simple signing, `simple_signing.py`, signatures from the sigstore lookaside named by
`sigstore_config_uri`). Keys, like the policy, may be KBS resources. Scopes of the `docker`
transport are tried as image-rs does: the whole reference, the repository and each parent namespace,
the host, `*.domain` wildcards, then `""`, then `default`. Every requirement of the chosen list must
hold.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from podvm.cdh.errors import CdhError, PullError, ResourceError
from podvm.cdh.identity import IdentityMismatch, check_identity
from podvm.cdh.reference import ImageReference
from podvm.cdh.registry import ImageManifest, RegistryClient
from podvm.cdh.resources import Resources
from podvm.cdh.simple_signing import SimpleSigningError, check_simple_signing, read_signatures, sigstore_base

ACCEPT, REJECT, SIGSTORE, SIGNED_BY = "insecureAcceptAnything", "reject", "sigstoreSigned", "signedBy"
REQUIREMENT_TYPES = (ACCEPT, REJECT, SIGSTORE, SIGNED_BY)
COSIGN_SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
COSIGN_PAYLOAD_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
MAX_SIGNATURES = 16


class Denied(CdhError):
    """One requirement refused the image; the message becomes `Denied by policy: <message>`."""


@dataclass(frozen=True, slots=True)
class Requirement:
    type: str
    key_path: str | None = None
    key_data: str | None = None
    signed_identity: dict[str, Any] | None = None
    key_type: str | None = None


@dataclass(frozen=True, slots=True)
class ImagePolicy:
    default: list[Requirement]
    transports: dict[str, dict[str, list[Requirement]]] = field(default_factory=dict)

    def requirements_for(self, ref: ImageReference) -> list[Requirement]:
        scopes = self.transports.get("docker")
        if scopes is not None:
            for scope in scope_candidates(ref):
                if scope in scopes:
                    return scopes[scope]
            if "" in scopes:
                return scopes[""]
        return self.default


def scope_candidates(ref: ImageReference) -> list[str]:
    """The docker-transport scopes for `ref`, most specific first (image-rs `get_image_namespaces`)."""
    names = [str(ref)]
    name = ref.name
    while True:
        names.append(name)
        if "/" not in name:
            break
        name = name.rsplit("/", 1)[0]
    host = name.rsplit(":", 1)[0] if ":" in name and not name.endswith("]") else name
    while "." in host:
        host = host.split(".", 1)[1]
        names.append(f"*.{host}")
    return names


def parse_policy(raw: bytes) -> ImagePolicy:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("not an object")
        default = _requirements(doc["default"])
        transports: dict[str, dict[str, list[Requirement]]] = {}
        for transport, scopes in (doc.get("transports") or {}).items():
            transports[transport] = {scope: _requirements(reqs) for scope, reqs in scopes.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise PullError("Image policy rejected: Invalid image policy file") from None
    return ImagePolicy(default, transports)


def _requirements(value: Any) -> list[Requirement]:
    if not isinstance(value, list):
        raise TypeError("requirements must be a list")
    result = []
    for item in value:
        kind = item["type"]
        if kind not in REQUIREMENT_TYPES:
            raise ValueError(f"unknown requirement type {kind!r}")
        identity = item.get("signedIdentity")
        if identity is not None and not isinstance(identity, dict):
            raise TypeError("signedIdentity must be an object")
        key_path, key_data, key_type = item.get("keyPath"), item.get("keyData"), item.get("keyType")
        if not all(v is None or isinstance(v, str) for v in (key_path, key_data, key_type)):
            raise TypeError("keyPath/keyData/keyType must be strings")
        result.append(Requirement(kind, key_path, key_data, identity, key_type))
    return result


class SignatureVerifier:
    """Loads the policy named by cdh.toml (`image_security_policy_uri`, else the inline policy; neither:
    no verification, as upstream) and checks one image against it."""

    def __init__(
        self,
        resources: Resources,
        policy_uri: str | None,
        policy_inline: str | None,
        sigstore_config_uri: str | None = None,
    ) -> None:
        self._resources = resources
        self._policy_uri = policy_uri
        self._policy_inline = policy_inline
        self._sigstore_config_uri = sigstore_config_uri

    async def check(self, ref: ImageReference, image: ImageManifest, client: RegistryClient) -> None:
        policy = await self._policy()
        if policy is None:
            return
        for requirement in policy.requirements_for(ref):
            try:
                await self._check(requirement, ref, image, client)
            except Denied as exc:
                raise PullError(f"Image policy rejected: Denied by policy: {exc}") from None

    async def _policy(self) -> ImagePolicy | None:
        if self._policy_uri is not None:
            try:
                return parse_policy(await self._resources.get(self._policy_uri))
            except ResourceError:
                raise PullError("Image policy rejected: Invalid image policy file") from None
        if self._policy_inline is not None:
            return parse_policy(self._policy_inline.encode())
        return None

    async def _check(
        self, requirement: Requirement, ref: ImageReference, image: ImageManifest, client: RegistryClient
    ) -> None:
        if requirement.type == ACCEPT:
            return
        if requirement.type == REJECT:
            raise Denied(f"Policy `reject` rejects image {ref}")
        if requirement.type == SIGNED_BY:
            try:
                await self._simple_signing(requirement, ref, image.digest)
            except (Denied, SimpleSigningError) as exc:
                raise Denied(f"rejected by `signedBy` rule: {exc}") from None
            return
        try:
            key = await self._cosign_key(requirement)
            # A tag of a multi-arch image resolves to the index: cosign signs that digest.
            payloads = await cosign_payloads(client, image.list_digest or image.digest, key)
            for payload in payloads:
                check_payload(payload, ref, image, requirement.signed_identity)
        except Denied as exc:
            raise Denied(f"rejected by `sigstoreSigned` rule: {exc}") from None

    async def _simple_signing(
        self, requirement: Requirement, ref: ImageReference, manifest_digest: str
    ) -> None:
        if requirement.key_type != "GPGKeys":
            raise Denied("Unknown key type in policy config: only support GPGKeys now.")
        keyring = await self._key(requirement)
        if self._sigstore_config_uri is None:
            raise Denied("Simple Signing Sigstore Config not set")
        try:
            config = await self._resources.get(self._sigstore_config_uri)
        except ResourceError:
            raise Denied("Invalid simple signing sigstore config") from None
        base = sigstore_base(config, ref, scope_candidates(ref))
        signatures = await asyncio.to_thread(read_signatures, base, ref, manifest_digest)
        await check_simple_signing(keyring, signatures, ref, manifest_digest, requirement.signed_identity)

    async def _key(self, requirement: Requirement) -> bytes:
        """The requirement's key material: base64 `keyData`, or `keyPath` (a file or a resource URI)."""
        if (requirement.key_path is None) == (requirement.key_data is None):
            raise Denied("exactly one of keyPath and keyData must be specified")
        if requirement.key_data is not None:
            try:
                return base64.b64decode(requirement.key_data, validate=True)
            except (binascii.Error, ValueError):
                raise Denied("keyData is not base64") from None
        assert requirement.key_path is not None
        path = requirement.key_path
        try:
            return await self._resources.get(path if "://" in path else f"file://{path}")
        except ResourceError:
            raise Denied(f"cannot get the public key {path}") from None

    async def _cosign_key(self, requirement: Requirement) -> ec.EllipticCurvePublicKey:
        if requirement.key_data is not None and requirement.key_data.lstrip().startswith("-----BEGIN"):
            pem = requirement.key_data.encode()  # image-rs takes cosign keyData as the PEM text itself
        else:
            pem = await self._key(requirement)
        try:
            key = serialization.load_pem_public_key(pem)
        except (ValueError, UnsupportedAlgorithm):
            raise Denied("the public key is not a PEM public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise Denied("only ECDSA public keys are supported for sigstoreSigned")
        return key


async def cosign_payloads(
    client: RegistryClient, manifest_digest: str, key: ec.EllipticCurvePublicKey
) -> list[dict[str, Any]]:
    """The payloads of the cosign signature image `sha256-<hex>.sig` whose signatures verify with
    `key`; Denied when there is none."""
    tag = manifest_digest.replace(":", "-", 1) + ".sig"
    try:
        body, _, _ = await client.manifest(tag)
        manifest = json.loads(body)
        layers = manifest["layers"]
        if not isinstance(layers, list):
            raise TypeError("layers")
    except (PullError, ValueError, KeyError, TypeError):
        raise Denied(f"no cosign signature ({tag}) for the image") from None
    verified = []
    for layer in layers[:MAX_SIGNATURES]:
        if not isinstance(layer, dict) or layer.get("mediaType") != COSIGN_PAYLOAD_TYPE:
            continue
        signature_b64 = (layer.get("annotations") or {}).get(COSIGN_SIGNATURE_ANNOTATION)
        if not isinstance(signature_b64, str):
            continue
        try:
            payload = await client.small_blob(layer, limit=64 * 1024)
            key.verify(base64.b64decode(signature_b64, validate=True), payload, ec.ECDSA(hashes.SHA256()))
            doc = json.loads(payload)
        except (PullError, InvalidSignature, binascii.Error, ValueError, TypeError):
            continue
        if isinstance(doc, dict):
            verified.append(doc)
    if not verified:
        raise Denied("no signature verifies with the policy's key")
    return verified


def check_payload(
    payload: dict[str, Any], ref: ImageReference, image: ImageManifest, identity: dict[str, Any] | None
) -> None:
    """The simple-signing payload names this image: its manifest digest (or that of the index it was
    resolved through, as image-rs accepts), and (when the policy has a signedIdentity) its repository."""
    critical = payload.get("critical")
    if not isinstance(critical, dict):
        raise Denied("signature payload has no critical section")
    signed_image = critical.get("image") or {}
    signed_digest = signed_image.get("docker-manifest-digest") if isinstance(signed_image, dict) else None
    if signed_digest is None or signed_digest not in (image.digest, image.list_digest):
        raise Denied("Manifest digest does not match signature.")
    if identity is None:
        return
    if identity.get("type") not in ("matchRepository", "exactRepository"):
        raise Denied(
            f"Denied by {identity.get('type')}: sigstoreSigned supports matchRepository and exactRepository"
        )
    signed = (critical.get("identity") or {}).get("docker-reference")
    if not isinstance(signed, str):
        raise Denied("signature payload has no docker-reference")
    try:
        check_identity(identity, ref, signed)
    except IdentityMismatch as exc:
        raise Denied(f"{exc} signed identity {signed[:200]!r}") from None
