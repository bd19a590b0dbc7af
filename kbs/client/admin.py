"""The KBS admin API as `kbs-client config ...` drives it: resources, resource and attestation
policies, reference values (upstream `tools/kbs-client`).

Admin requests carry `Authorization: Bearer <JWT>`: either a token obtained elsewhere (upstream's
`--admin-token-file`) or one minted here from the admin's private key (upstream's older
`--auth-private-key`: Ed25519 -> EdDSA, P-256 -> ES256; claims iat/nbf/exp, 2 hours, plus the `role`
claim the KBS's ACLs match on).
"""

from __future__ import annotations

import base64
import time
from urllib.parse import quote

import aiohttp
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from protocols.kbs import KbsProtocolError, b64url_encode, dumps, loads
from protocols.kbs_client.errors import AdminKeyError, KbsResponseError
from protocols.kbs_client.http import DEFAULT_TIMEOUT, KbsHttp, raise_for_status
from protocols.kbs_client.resource_uri import parse_resource_path

ADMIN_TOKEN_LIFETIME = 2 * 3600
DEFAULT_ADMIN_ROLE = "admin"
DEFAULT_ATTESTATION_POLICY_ID = "default_cpu"
DEFAULT_POLICY_TYPE = "rego"
REFERENCE_VALUE_VERSION = "0.1.0"


def mint_admin_token(
    private_key_pem: bytes,
    *,
    role: str = DEFAULT_ADMIN_ROLE,
    lifetime: int = ADMIN_TOKEN_LIFETIME,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    """A signed admin JWT for the KBS (EdDSA for Ed25519 keys, ES256 for P-256 keys); `issuer` sets
    `iss` for a KBS whose identity provider names one."""
    try:
        key = serialization.load_pem_private_key(private_key_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise AdminKeyError("admin key is not an unencrypted PEM private key") from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        alg = "EdDSA"
    elif isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1":
        alg = "ES256"
    else:
        raise AdminKeyError("admin key must be Ed25519 or EC P-256")
    issued = int(time.time() if now is None else now)
    header = b64url_encode(dumps({"alg": alg, "typ": "JWT"}))
    claims_doc: dict[str, object] = {"iat": issued, "nbf": issued, "exp": issued + lifetime, "role": role}
    if issuer is not None:
        claims_doc["iss"] = issuer
    claims = b64url_encode(dumps(claims_doc))
    signing_input = f"{header}.{claims}".encode("ascii")
    if isinstance(key, ed25519.Ed25519PrivateKey):
        signature = key.sign(signing_input)
    else:
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return f"{header}.{claims}.{b64url_encode(signature)}"


class AdminClient:
    """Admin calls against one KBS; every method raises a `KbsClientError` when the KBS refuses."""

    def __init__(
        self,
        url: str,
        *,
        admin_token: str | None = None,
        ca_pem: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._http = KbsHttp(url, session=session, ca_pem=ca_pem, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.close()

    async def set_resource(self, path: str, data: bytes) -> None:
        await self._call("POST", _resource_endpoint(path), data, "application/octet-stream")

    async def delete_resource(self, path: str) -> None:
        await self._call("DELETE", _resource_endpoint(path))

    async def set_resource_policy(self, policy: bytes) -> None:
        await self._call("POST", "resource-policy", dumps({"policy": b64url_encode(policy)}))

    async def set_attestation_policy(
        self,
        policy: bytes,
        *,
        policy_type: str = DEFAULT_POLICY_TYPE,
        policy_id: str = DEFAULT_ATTESTATION_POLICY_ID,
    ) -> None:
        body = {"type": policy_type, "policy_id": policy_id, "policy": b64url_encode(policy)}
        await self._call("POST", "attestation-policy", dumps(body))

    async def set_sample_reference_value(self, name: str, value: object) -> None:
        """Register `{name: value}` through the RVPS `sample` extractor."""
        payload = base64.b64encode(dumps({name: value})).decode("ascii")
        message = {"version": REFERENCE_VALUE_VERSION, "type": "sample", "payload": payload}
        await self._call("POST", "reference-value", dumps(message))

    async def get_reference_value(self, reference_value_id: str) -> object:
        body = await self._call("GET", f"reference-value/{quote(reference_value_id, safe='')}")
        try:
            return loads(body, "reference value")
        except KbsProtocolError as exc:
            raise KbsResponseError(str(exc)) from None

    async def _call(
        self, method: str, endpoint: str, body: bytes | None = None, content_type: str = "application/json"
    ) -> bytes:
        headers = dict(self._headers)
        if body is not None:
            headers["Content-Type"] = content_type
        response = await self._http.request(method, endpoint, body=body, headers=headers)
        raise_for_status(response)
        return response.body


def _resource_endpoint(path: str) -> str:
    return f"resource/{parse_resource_path(path).resource_path}"
