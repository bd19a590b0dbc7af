"""Errors of the KBS client, one type per way a request can fail, so callers (the attestation agent's
local API, `kbs-client`) can tell "denied" from "not found" from "the KBS sent garbage"."""

from __future__ import annotations


class KbsClientError(Exception):
    """Base class of every error the KBS client raises."""


class ResourcePathError(KbsClientError, ValueError):
    """A resource path or `kbs://` resource URI that does not name a resource."""


class TeeKeyError(KbsClientError):
    """A TEE key that cannot be loaded or does not fit the requested algorithm."""


class JweError(KbsClientError):
    """A resource response that is not a JWE this client's TEE key can decrypt."""


class TokenFormatError(KbsClientError):
    """An attestation token that is not a JWT with a JSON claims object."""


class AdminKeyError(KbsClientError):
    """An admin private key that cannot sign an admin token."""


class KbsConnectionError(KbsClientError):
    """The KBS could not be reached or did not answer in time."""


class KbsResponseError(KbsClientError):
    """The KBS answered with something that does not follow the protocol."""


class KbsHttpError(KbsClientError):
    """The KBS refused a request; `error_type`/`detail` come from its ErrorInformation JSON."""

    def __init__(self, status: int, error_type: str, detail: str) -> None:
        self.status = status
        self.error_type = error_type
        self.detail = detail
        super().__init__(f"KBS answered HTTP {status}: {error_type or 'no error type'}: {detail}")


class KbsUnauthorized(KbsHttpError):
    """HTTP 401: attestation failed, the session expired, the policy denied, or (upstream's choice)
    the resource does not exist."""


class ResourceNotFound(KbsHttpError):
    """HTTP 404: the path names no plugin or is malformed."""


class EvidenceError(KbsClientError):
    """The evidence provider (the local TEE) could not produce evidence."""


class RcarHandshakeError(KbsClientError):
    """The auth/attest handshake did not produce a token after all attempts."""
