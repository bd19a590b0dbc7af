"""The attestation service's REST API (upstream `restful-as` paths and bodies) on aiohttp.

Upstream routes: `POST /attestation` (body: token text), `POST /policy`, `GET /policy`
(`[{"policy-id": id}]`), `GET /policy/{id}` (Rego text), `POST /challenge`, `GET /.well-known/jwks.json`,
`GET /healthz`. Added here, with the KBS's names since upstream's AS serves reference values only over
gRPC: `POST /reference-value` (body: an RVPS registration message) and `GET /reference-value/{id}`
(the value as JSON, `null` when absent or expired).

Errors are a plain-text body: 400 for a malformed request, policy or reference value, 403 when
evidence is not accepted, 500 otherwise. Like upstream there is no authentication: listen on loopback
or put it behind an authenticating proxy.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from verifier.ear import EarError
from verifier.errors import VerificationError
from verifier.policy import PolicyError
from verifier.rvps import RvpsError
from verifier.server import wire
from verifier.service import AttestationService, RequestError

log = logging.getLogger(__name__)
SERVICE_KEY = web.AppKey("attestation_service", AttestationService)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _service(request: web.Request) -> AttestationService:
    return request.app[SERVICE_KEY]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Map the service's error types to status codes; anything else is a 500 without internals."""
    try:
        return await handler(request)
    except VerificationError as exc:
        log.info("%s %s: evidence rejected: %s", request.method, request.path, exc)
        return web.Response(status=403, text=str(exc))
    except (RequestError, PolicyError, RvpsError) as exc:
        log.info("%s %s: bad request: %s", request.method, request.path, exc)
        return web.Response(status=400, text=str(exc))
    except EarError as exc:
        log.error("%s %s: token signing failed: %s", request.method, request.path, exc)
        return web.Response(status=500, text=str(exc))


async def attestation(request: web.Request) -> web.Response:
    requests, policy_ids = wire.rest_attestation(await request.read())
    token = await _service(request).evaluate_async(requests, policy_ids)
    return web.Response(text=token)


async def set_policy(request: web.Request) -> web.Response:
    policy_id, policy = wire.rest_set_policy(await request.read())
    await asyncio.to_thread(_service(request).set_policy, policy_id, policy)
    return web.Response()


async def list_policies(request: web.Request) -> web.Response:
    ids = _service(request).list_policies()
    return web.json_response([{"policy-id": policy_id} for policy_id in ids])


async def get_policy(request: web.Request) -> web.Response:
    return web.Response(text=_service(request).get_policy(request.match_info["policy_id"]))


async def challenge(request: web.Request) -> web.Response:
    tee, params = wire.rest_challenge(await request.read())
    return web.Response(text=_service(request).challenge(tee, params))


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(_service(request).jwks())


async def register_reference_value(request: web.Request) -> web.Response:
    message = await request.read()
    await asyncio.to_thread(_service(request).register_reference_value, message)
    return web.Response()


async def query_reference_value(request: web.Request) -> web.Response:
    value = _service(request).query_reference_value(request.match_info["name"])
    return web.Response(text=json.dumps(value), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response()


def make_app(service: AttestationService) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=wire.MAX_BODY_BYTES)
    app[SERVICE_KEY] = service
    app.router.add_post("/attestation", attestation)
    app.router.add_post("/policy", set_policy)
    app.router.add_get("/policy", list_policies)
    app.router.add_get("/policy/{policy_id}", get_policy)
    app.router.add_post("/challenge", challenge)
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_post("/reference-value", register_reference_value)
    app.router.add_get("/reference-value/{name:.+}", query_reference_value)
    app.router.add_get("/healthz", healthz)
    return app
