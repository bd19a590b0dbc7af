"""The key provider's two operations over the key-provider JSON, independent of how it is reached
(`cmd` stdin/stdout or gRPC)."""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from kbs.client.admin import AdminClient, mint_admin_token
from protocols.kbs_client.errors import KbsClientError
from protocols.kbs_client.resource_uri import ResourceUri, parse_resource_path, parse_resource_uri
from protocols.ocicrypt import keyprovider, keywrap, packet, params
from protocols.ocicrypt.errors import OcicryptError

log = logging.getLogger(__name__)

# coco_keyprovider's `sample=true` mode: a published KEK and an all-zero IV, for demos only.
SAMPLE_KEK = bytes.fromhex("d99b7705b0ba7a168295b3a3367270b0dd9b371bf514ca8b9ba7f0a33711daea")
SAMPLE_KID = "kbs:///default/test-key/1"
RANDOM_KEK_REPO_TYPE = "default/image-kek"


class KeyProviderError(Exception):
    """A request this key provider cannot serve; the message says what to change."""


@dataclass(frozen=True, slots=True)
class KbsUpload:
    """Where wrapped KEKs are registered: a KBS URL and the admin's private key (PEM)."""

    url: str
    admin_key_pem: bytes
    issuer: str | None = None
    ca_pem: str | None = None  # root certificate of an HTTPS KBS with a private CA


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """`name`: the provider name skopeo was told (`provider:<name>:...`); None takes the only entry."""

    name: str | None = None
    kbs: KbsUpload | None = None


class KeyProvider:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config

    async def handle(self, raw: bytes) -> bytes:
        """One key-provider request JSON -> its response JSON."""
        try:
            request = keyprovider.parse_request(raw)
            if isinstance(request, keyprovider.WrapRequest):
                return keyprovider.wrap_response(await self.wrap(request))
            return keyprovider.unwrap_response(self.unwrap(request))
        except OcicryptError as exc:
            raise KeyProviderError(str(exc)) from None

    async def wrap(self, request: keyprovider.WrapRequest) -> bytes:
        options = self._params(request.parameters, "--encryption-key")
        if options.sample:
            zero_iv = bytes(keywrap.IV_SIZES[options.algorithm])
            wrapped, iv = keywrap.wrap(SAMPLE_KEK, request.optsdata, options.algorithm, zero_iv)
            return packet.AnnotationPacket(SAMPLE_KID, wrapped, iv, options.algorithm).to_json()
        kid, kek = await self._kek_for_wrap(options)
        wrapped, iv = keywrap.wrap(kek, request.optsdata, options.algorithm)
        return packet.AnnotationPacket(str(kid), wrapped, iv, options.algorithm).to_json()

    def unwrap(self, request: keyprovider.UnwrapRequest) -> bytes:
        """Host-side unwrap (e.g. `skopeo copy --decryption-key provider:<name>:keypath=...`): the KEK
        must be given; in the pod VM the confidential data hub fetches it from the KBS instead."""
        options = self._params(request.parameters, "--decryption-key")
        annotation = packet.parse_packet(request.annotation)
        if (
            annotation.provider != packet.PROVIDER_KBS
            or annotation.iv is None
            or annotation.wrap_type is None
        ):
            raise KeyProviderError("annotation packet is not a kbs packet with iv and wrap_type")
        if options.sample:
            kek = SAMPLE_KEK
        elif options.keypath is not None:
            kek = read_kek(Path(options.keypath))
        else:
            raise KeyProviderError("unwrapping needs the KEK: keypath=<file> (or sample=true)")
        return keywrap.unwrap(kek, annotation.wrapped_data, annotation.iv, annotation.wrap_type)

    def _params(self, parameters: dict[str, list[bytes]], flag: str) -> params.ProviderParams:
        if self.config.name is not None:
            values = parameters.get(self.config.name, [])
        elif len(parameters) == 1:
            values = next(iter(parameters.values()))
        else:
            raise KeyProviderError(
                f"{len(parameters)} providers in the request: start me with --provider-name"
            )
        if len(values) != 1:
            raise KeyProviderError(f"expected one {flag} provider:<name>:<parameters>, got {len(values)}")
        return params.parse_params(values[0])

    async def _kek_for_wrap(self, options: params.ProviderParams) -> tuple[ResourceUri, bytes]:
        if options.keypath is None:
            if self.config.kbs is None:
                raise KeyProviderError("no keypath=<KEK file> and no KBS to register a random KEK with")
            if options.keyid is not None:
                raise KeyProviderError(
                    "keyid without keypath: every layer would get a different KEK under one id"
                )
            kid = parse_resource_path(f"{RANDOM_KEK_REPO_TYPE}/{uuid.uuid4()}")
            kek = os.urandom(keywrap.KEK_SIZE)
        else:
            kek = read_kek(Path(options.keypath), create=True)
            if options.keyid is None:
                raise KeyProviderError("keyid=kbs:///<repo>/<type>/<tag> is required with keypath")
            kid = resource_id(options.keyid)
        if self.config.kbs is not None:
            await register_kek(self.config.kbs, kid, kek)
        return kid, kek


def resource_id(keyid: str) -> ResourceUri:
    """`kbs:///repo/type/tag`, `kbs://<ignored addr>/...` or a bare `[/]repo/type/tag`, written back as
    `kbs:///repo/type/tag` (the guest takes the KBS address from its own config)."""
    try:
        uri = parse_resource_uri(keyid) if "://" in keyid else parse_resource_path(keyid)
    except KbsClientError as exc:
        raise KeyProviderError(f"keyid: {exc}") from None
    if uri.plugin != "resource" or uri.query is not None:
        raise KeyProviderError("keyid must name a KBS resource: kbs:///<repo>/<type>/<tag>")
    return ResourceUri(plugin=uri.plugin, path=uri.path)


def read_kek(path: Path, *, create: bool = False) -> bytes:
    """A 32-byte KEK file; with `create`, a missing file gets a new random KEK (mode 0600), so that every
    layer of one image (one key provider run each) is wrapped with the same KEK."""
    if create:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        except OSError as exc:
            raise KeyProviderError(f"cannot create KEK file {path}: {exc.strerror}") from None
        else:
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(keywrap.KEK_SIZE))
    try:
        with path.open("rb") as source:
            kek = source.read(keywrap.KEK_SIZE + 1)
    except OSError as exc:
        raise KeyProviderError(f"cannot read KEK file {path}: {exc.strerror}") from None
    if len(kek) != keywrap.KEK_SIZE:
        raise KeyProviderError(f"KEK file {path} must hold exactly {keywrap.KEK_SIZE} bytes")
    return kek


async def register_kek(upload: KbsUpload, kid: ResourceUri, kek: bytes) -> None:
    """Store the KEK as the KBS resource `kid` (admin API, idempotent for a given KEK)."""
    try:
        token = mint_admin_token(upload.admin_key_pem, issuer=upload.issuer)
        async with AdminClient(upload.url, admin_token=token, ca_pem=upload.ca_pem) as admin:
            await admin.set_resource(kid.resource_path, kek)
    except KbsClientError as exc:
        raise KeyProviderError(f"registering the KEK at {kid} in the KBS failed: {exc}") from None
    log.info("registered KEK %s in the KBS", kid)
