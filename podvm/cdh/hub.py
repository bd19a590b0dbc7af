"""The CDH's ttRPC services with upstream's names: `keyprovider.KeyProviderService/UnWrapKey`,
`api.GetResourceService/GetResource`, `api.ImagePullService/PullImage`,
`api.SecureMountService/SecureMount`. Failures are INTERNAL with
upstream's `[CDH] [ERROR]: <brief>` message; the detail is logged."""

from __future__ import annotations

import logging
from pathlib import Path

from podvm.attestation_agent.agent import AttesterEvidence
from podvm.attestation_agent.attester import Attester
from podvm.cdh.config import CdhConfig
from podvm.cdh.errors import CdhError, UnwrapError
from podvm.cdh.mount_request import parse_secure_mount
from podvm.cdh.policy import SignatureVerifier
from podvm.cdh.pull import ImagePuller
from podvm.cdh.resources import Resources
from podvm.cdh.securemount import BlockDeviceMounter
from podvm.cdh.unwrap import unwrap_optsdata
from protocols.kbs_client.rcar import KbsClient
from protocols.ocicrypt import keyprovider
from protocols.ocicrypt.errors import OcicryptError
from protocols.proto import cdh_pb2, keyprovider_pb2, securemount_pb2
from protocols.ttrpc.envelope import Call
from protocols.ttrpc.server import Server, Services, unary
from protocols.ttrpc.status import Code, TtrpcError

log = logging.getLogger(__name__)


def _status(exc: CdhError) -> TtrpcError:
    return TtrpcError(Code.INTERNAL, f"[CDH] [ERROR]: {exc}")


class ConfidentialDataHub:
    def __init__(self, config: CdhConfig, attester: Attester, init_data_toml: str | None = None) -> None:
        kbs = None
        if config.kbs_url is not None:
            kbs = KbsClient(
                config.kbs_url,
                evidence_provider=AttesterEvidence(attester),
                init_data=init_data_toml,
                ca_pem=config.kbs_cert,
            )
        self.config = config
        self.resources = Resources(kbs)
        self.mounter = BlockDeviceMounter(self.resources)
        image = config.image
        verifier = SignatureVerifier(
            self.resources, image.policy_uri, image.policy_inline, image.sigstore_config_uri
        )
        self.puller = ImagePuller(
            self.resources, self.unwrap, verifier, image.work_dir, image.credentials_uri
        )

    async def close(self) -> None:
        await self.resources.close()

    async def unwrap(self, annotation: bytes) -> bytes:
        return await unwrap_optsdata(self.resources, annotation)

    def services(self) -> Services:
        return {
            "keyprovider.KeyProviderService": {
                "UnWrapKey": unary(keyprovider_pb2.KeyProviderKeyWrapProtocolInput, self._un_wrap_key)
            },
            "api.GetResourceService": {"GetResource": unary(cdh_pb2.GetResourceRequest, self._get_resource)},
            "api.ImagePullService": {"PullImage": unary(cdh_pb2.ImagePullRequest, self._pull_image)},
            "api.SecureMountService": {
                "SecureMount": unary(securemount_pb2.SecureMountRequest, self._secure_mount)
            },
        }

    async def serve(self, socket: Path | None = None) -> Server:
        server = Server(self.services())
        await server.listen_unix(socket or self.config.socket, mode=0o600)
        return server

    async def _un_wrap_key(
        self, request: keyprovider_pb2.KeyProviderKeyWrapProtocolInput, call: Call
    ) -> keyprovider_pb2.KeyProviderKeyWrapProtocolOutput:
        try:
            parsed = keyprovider.parse_request(request.KeyProviderKeyWrapProtocolInput)
        except OcicryptError as exc:
            log.warning("UnWrapKey: %s", exc)
            raise TtrpcError(Code.INTERNAL, "[ERROR] UnwrapKey Parse request failed") from None
        if not isinstance(parsed, keyprovider.UnwrapRequest):
            raise TtrpcError(Code.INTERNAL, "[ERROR] UnwrapKey Parse request failed")
        try:
            optsdata = await self.unwrap(parsed.annotation)
        except UnwrapError as exc:
            log.warning("UnWrapKey: %s", exc.detail)
            raise _status(exc) from None
        output = keyprovider.unwrap_response(optsdata)
        return keyprovider_pb2.KeyProviderKeyWrapProtocolOutput(KeyProviderKeyWrapProtocolOutput=output)

    async def _get_resource(
        self, request: cdh_pb2.GetResourceRequest, call: Call
    ) -> cdh_pb2.GetResourceResponse:
        try:
            return cdh_pb2.GetResourceResponse(Resource=await self.resources.get(request.ResourcePath))
        except CdhError as exc:
            raise _status(exc) from None

    async def _pull_image(self, request: cdh_pb2.ImagePullRequest, call: Call) -> cdh_pb2.ImagePullResponse:
        try:
            digest = await self.puller.pull(request.image_url, request.bundle_path)
        except CdhError as exc:
            log.warning("PullImage %s: %s %s", request.image_url[:200], exc, getattr(exc, "detail", ""))
            raise _status(exc) from None
        return cdh_pb2.ImagePullResponse(manifest_digest=digest)

    async def _secure_mount(
        self, request: securemount_pb2.SecureMountRequest, call: Call
    ) -> securemount_pb2.SecureMountResponse:
        try:
            mount = parse_secure_mount(
                request.volume_type, dict(request.options), list(request.flags), request.mount_point
            )
            await self.mounter.mount(mount)
        except CdhError as exc:
            log.warning("SecureMount %s: %s", request.mount_point[:200], exc)
            raise _status(exc) from None
        return securemount_pb2.SecureMountResponse()
