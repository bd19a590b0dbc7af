"""The KBS error type: upstream's `kbs::Error` variant, its detail text, and the HTTP status it maps to.

Upstream answers 404 only for `InvalidRequestPath` and `PluginNotFound` and 401 for everything else
(policy denial and a missing resource included); clients rely on that, so it is kept. Added here,
all still with the `ErrorInformation` body: 413 for a body over the size cap, 405 for a method a
path does not take, 400/431/408 for a request malformed, over the header limit or too slow at the
HTTP level, 503 when the storage backend cannot be reached for now, and 500 for a fault of the
KBS itself.
"""

from __future__ import annotations

from protocols.kbs import ERROR_VARIANTS, ErrorInformation


class KbsError(Exception):
    """A refused request. `variant` is upstream's error variant name; the message is the detail."""

    def __init__(self, variant: str, detail: str, status: int = 401) -> None:
        if variant not in ERROR_VARIANTS:
            raise ValueError(f"{variant!r} is not an upstream KBS error variant")
        super().__init__(detail)
        self.variant = variant
        self.detail = detail
        self.status = status

    def info(self) -> ErrorInformation:
        return ErrorInformation.of(self.variant, self.detail)


def attestation_error(stage: str, reason: str) -> KbsError:
    """`AttestationError` as upstream words it ("RCAR handshake Auth failed: ...")."""
    return KbsError("AttestationError", f"Attestation error: RCAR handshake {stage} failed: {reason}")


def invalid_path(path: str) -> KbsError:
    return KbsError("InvalidRequestPath", f"Request path {path[:200]} is invalid", 404)


def plugin_not_found(name: str) -> KbsError:
    return KbsError("PluginNotFound", f"Plugin {name[:100]} not found", 404)


def admin_denied(endpoint: str, reason: str) -> KbsError:
    return KbsError(
        "AdminAuthAccess", f"admin access denied for endpoint {endpoint}: Admin access denied: {reason}"
    )


def token_not_found() -> KbsError:
    return KbsError("TokenNotFound", "Attestation Token not found")


def token_invalid(reason: str) -> KbsError:
    return KbsError(
        "TokenVerifierError", f"Token Verifier error: Failed to verify Attestation Token: {reason}"
    )


def policy_deny() -> KbsError:
    return KbsError("PolicyDeny", "Access denied by policy")


def plugin_error(reason: str) -> KbsError:
    return KbsError("PluginInternalError", f"Plugin internal error: {reason}")


def serde_error(reason: str) -> KbsError:
    return KbsError("SerdeError", f"Serialize/Deserialize failed: {reason}")


def payload_too_large(limit: int) -> KbsError:
    return KbsError("HTTPFailed", f"request body is larger than the {limit} byte limit", 413)


def method_not_allowed(method: str, path: str) -> KbsError:
    return KbsError("InvalidRequestPath", f"Request path {path[:200]} does not take {method[:10]}", 405)


def http_error(status: int, reason: str) -> KbsError:
    """A request refused at the HTTP level (malformed, over a limit, too slow)."""
    return KbsError("HTTPFailed", f"HTTP request failed: {reason}", status)


def request_timeout(seconds: float) -> KbsError:
    return http_error(408, f"the request body did not arrive within {seconds:g} s")


def internal_error() -> KbsError:
    """A fault of the KBS itself (logged with its traceback); nothing of the request is echoed."""
    return KbsError("HTTPFailed", "internal error of the KBS", 500)


def storage_unavailable(error: KbsError) -> KbsError:
    """`error` (upstream's variant and wording for the step) as a 503: the storage backend cannot be
    reached for now, and the same request may succeed later."""
    return KbsError(error.variant, f"{error.detail} (the storage backend is unavailable: retry later)", 503)
