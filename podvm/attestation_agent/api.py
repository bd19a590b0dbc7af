"""The local REST API workloads call on 127.0.0.1:8006, with upstream api-server-rest's paths,
status codes and bodies:

    GET  /info                                   {"version", "tee"?, "feature"}
    GET  /cdh/resource/<repo>/<type>/<tag>        the decrypted KBS resource
    GET  /aa/token?token_type=kbs                 {"token", "tee_keypair"}
    GET  /aa/evidence?runtime_data=...[&encoding=base64]
    GET  /aa/additional-evidence?runtime_data=... (empty: no devices)
    POST /aa/aael                                 runtime measurements (not enabled here)

Only loopback peers are served (403 otherwise), as upstream: the pod network namespace shares the
loopback with the API, nothing else may reach it.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable
from importlib import metadata

from aiohttp import web

from podvm.attestation_agent.agent import AttestationAgent
from podvm.attestation_agent.errors import AttestationAgentError
from protocols.kbs import KbsProtocolError, b64url_decode
from protocols.kbs_client.errors import KbsClientError

log = logging.getLogger(__name__)

DEFAULT_BIND = "127.0.0.1:8006"
FEATURES = ("resource", "attestation", "all")
AGENT_KEY = web.AppKey("agent", AttestationAgent)
FEATURE_KEY = web.AppKey("feature", str)
_OCTETS = "application/octet-stream"
_AAEL_NOT_ENABLED = b'{"success":"false","message": "Attestation Agent does not enable eventlog recording"}'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def build_app(agent: AttestationAgent, feature: str = "all") -> web.Application:
    if feature not in FEATURES:
        raise ValueError(f"unknown feature {feature!r}; use one of {FEATURES}")
    app = web.Application(middlewares=[_loopback_only])
    app[AGENT_KEY] = agent
    app[FEATURE_KEY] = feature
    app.router.add_route("*", "/info", _info)
    app.router.add_route("*", "/aa/{api:.*}", _aa)
    app.router.add_route("*", "/cdh/{api:.*}", _cdh)
    app.router.add_route("*", "/{tail:.*}", _not_found)
    return app


def is_loopback_peer(remote: str | None) -> bool:
    """Whether a peer address (`request.remote`) is a loopback address; unknown peers are not."""
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


@web.middleware
async def _loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_loopback_peer(request.remote):
        return web.Response(status=403, text="Forbidden")
    return await handler(request)


async def _info(request: web.Request) -> web.StreamResponse:
    if request.method != "GET":
        return web.Response(status=405, text="Method Not Allowed")
    feature = request.app[FEATURE_KEY]
    info: dict[str, str] = {"version": _version()}
    if feature in ("attestation", "all"):
        info["tee"] = request.app[AGENT_KEY].tee
    info["feature"] = feature
    return web.json_response(info)


async def _aa(request: web.Request) -> web.StreamResponse:
    if request.app[FEATURE_KEY] not in ("attestation", "all"):
        return web.Response(status=404, text="Attestation Feature Not Enabled")
    agent = request.app[AGENT_KEY]
    api, method = request.match_info["api"], request.method
    if api == "token" and method == "GET":
        token_type = request.query.get("token_type")
        if token_type is None:
            return _bad_request()
        return await _octets(agent.get_token(token_type))
    if api in ("evidence", "additional-evidence") and method == "GET":
        runtime_data = _runtime_data(request)
        if runtime_data is None:
            return _bad_request()
        if api == "additional-evidence":
            return web.Response(body=b"", content_type=_OCTETS)
        return await _octets(agent.get_evidence(runtime_data))
    if api == "aael" and method == "POST":
        return web.Response(body=_AAEL_NOT_ENABLED, content_type="application/json")
    return await _not_found(request)


async def _cdh(request: web.Request) -> web.StreamResponse:
    if request.app[FEATURE_KEY] not in ("resource", "all"):
        return web.Response(status=404, text="Resource Feature Not Enabled")
    api, _, path = request.match_info["api"].partition("/")
    if api != "resource" or not path:
        return await _not_found(request)
    # Upstream hands CDH `kbs:///<path>`; CDH answers any method the same way.
    return await _octets(request.app[AGENT_KEY].get_resource(f"kbs:///{path}"))


async def _not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="URL NOT FOUND")


def _bad_request() -> web.Response:
    return web.Response(status=400, text="BAD REQUEST")


def _runtime_data(request: web.Request) -> bytes | None:
    """`runtime_data` as UTF-8 bytes, or URL-safe unpadded base64 with `encoding=base64`."""
    value = request.query.get("runtime_data")
    if value is None:
        return None
    encoding = request.query.get("encoding")
    if encoding is None:
        return value.encode("utf-8")
    if encoding != "base64":
        return None
    try:
        return b64url_decode(value, "runtime_data")
    except KbsProtocolError:
        return None


async def _octets(result: Awaitable[bytes]) -> web.Response:
    try:
        body = await result
    except (AttestationAgentError, KbsClientError) as exc:
        log.error("request failed: %s", exc)
        return web.Response(status=500, text=str(exc))
    return web.Response(body=body, content_type=_OCTETS)


def _version() -> str:
    try:
        return metadata.version("peerpods")
    except metadata.PackageNotFoundError:
        return "unknown"
