"""HTTP for the KBS (aiohttp): upstream's routes on top of `Broker`.

One catch-all route `/kbs/v0/{path}` as upstream: the first segment picks the endpoint (`auth`,
`attest`, `attestation-policy`, `resource-policy`, `reference-value`, `resource`), anything else is
`PluginNotFound` (404). Every error is upstream's `ErrorInformation` JSON, including a body over the
size cap (413), a body slower than the body timeout (408), an unknown path (404), a method a path
does not take (405) and a fault of the KBS itself (500, logged). `/metrics` and `/healthz` are
outside the prefix. `kbs.httpserver` serves this application.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from kbs import errors
from kbs.broker import AdminRequest, Broker
from kbs.errors import KbsError
from kbs.metrics import CONTENT_TYPE
from kbs.sessions import Session
from protocols.kbs import API_PREFIX, SESSION_COOKIE, token_response

log = logging.getLogger(__name__)
BROKER_KEY = web.AppKey("kbs_broker", Broker)
MAX_BODY_KEY = web.AppKey("kbs_max_body", int)
BODY_TIMEOUT_KEY = web.AppKey("kbs_body_timeout", float)
DEFAULT_MAX_BODY = 2 * 1024 * 1024
DEFAULT_BODY_TIMEOUT = 30.0
JSON = "application/json"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(error: KbsError) -> web.Response:
    return web.Response(status=error.status, body=error.info().to_json(), content_type=JSON)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refusals as upstream's error JSON; request timing and sizes for /metrics."""
    metrics = request.app[BROKER_KEY].metrics
    counted = request.path.startswith("/kbs")
    length = request.content_length or 0
    if counted:
        metrics.requests.inc()
        metrics.active.inc()
        metrics.request_size.observe(float(length))
    started = time.perf_counter()
    try:
        if length > request.app[MAX_BODY_KEY]:  # even where no body is read
            raise web.HTTPRequestEntityTooLarge(request.app[MAX_BODY_KEY], length)
        response = await handler(request)
    except KbsError as exc:
        log.info("%s %r: %r", request.method, request.path[:200], exc.detail)  # quoted: no forged lines
        response = error_response(exc)
    except web.HTTPRequestEntityTooLarge:
        response = error_response(errors.payload_too_large(request.app[MAX_BODY_KEY]))
    except web.HTTPMethodNotAllowed:
        response = error_response(errors.method_not_allowed(request.method, request.path))
    except web.HTTPNotFound:
        response = error_response(errors.invalid_path(request.path))
    except web.HTTPException as exc:  # another refusal by aiohttp, e.g. a malformed body
        response = error_response(errors.http_error(exc.status, exc.reason))
    except Exception:
        log.exception("%s %r: internal error", request.method, request.path[:200])
        response = error_response(errors.internal_error())
    finally:
        if counted:
            metrics.active.dec()
            metrics.duration.observe(time.perf_counter() - started)
    if counted and response.body_length is not None:
        metrics.response_size.observe(float(response.body_length))
    return response


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _http_date(seconds: float) -> str:
    """RFC 7231's IMF-fixdate (as `email.utils.formatdate(usegmt=True)`, at a fifth of its cost)."""
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    )


def _session_headers(session: Session) -> dict[str, str]:
    """Upstream's cookie: the session id (32 hex digits), `Expires`; written as aiohttp's
    `set_cookie` writes it, without building a `SimpleCookie` per response."""
    return {"Set-Cookie": f"{SESSION_COOKIE}={session.id}; expires={_http_date(session.expires)}; Path=/"}


async def _body(request: web.Request) -> bytes:
    """The request body, within the body timeout (a client cannot hold a handler by trickling it)."""
    if request.content.is_eof():  # the whole body came with the head: nothing to wait for
        return await request.read()
    limit = request.app[BODY_TIMEOUT_KEY]
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise errors.request_timeout(limit) from None


def _admin(request: web.Request) -> AdminRequest:
    return AdminRequest(request.headers.get("Authorization"), str(request.rel_url))


async def kbs_api(request: web.Request) -> web.StreamResponse:
    broker = request.app[BROKER_KEY]
    path = request.match_info["path"]
    name, _, rest = path.partition("/")
    parts = rest.split("/") if rest else []
    method = request.method
    if name == "auth" and method == "POST":
        challenge, session = await broker.auth(await _body(request))
        return web.Response(body=challenge.to_json(), content_type=JSON, headers=_session_headers(session))
    if name == "attest" and method == "POST":
        body = await _body(request)
        token, session = await broker.attest(request.cookies.get(SESSION_COOKIE), body)
        return web.Response(body=token_response(token), content_type=JSON, headers=_session_headers(session))
    if name == "resource" and method in ("GET", "POST", "DELETE"):
        return await _resource(request, broker, parts)
    if name == "attestation-policy" and method == "POST":
        await broker.set_attestation_policy(_admin(request), await _body(request))
        return web.Response()
    if name == "resource-policy" and method == "POST":
        await broker.set_resource_policy(_admin(request), await _body(request))
        return web.Response()
    if name == "resource-policy" and method == "GET":
        return web.json_response(broker.list_resource_policies(_admin(request)))
    if name == "reference-value" and method == "POST":
        await broker.register_reference_value(_admin(request), await _body(request))
        return web.Response(content_type=JSON)
    if name == "reference-value" and method == "GET":
        value = await broker.query_reference_value(_admin(request), parts)
        return web.Response(text=json.dumps(value), content_type=JSON)
    raise errors.plugin_not_found(name)


async def _resource(request: web.Request, broker: Broker, parts: list[str]) -> web.StreamResponse:
    if request.method == "GET":
        jwe = await broker.get_resource(
            parts,
            dict(request.query),
            request.cookies.get(SESSION_COOKIE),
            request.headers.get("Authorization"),
        )
        return web.Response(body=jwe, content_type=JSON)
    if request.method == "POST":
        await broker.set_resource(_admin(request), parts, await _body(request))
    else:
        await broker.delete_resource(_admin(request), parts)
    return web.Response()


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[BROKER_KEY].metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def healthz(request: web.Request) -> web.Response:
    return web.Response()


def make_app(
    broker: Broker, max_body: int = DEFAULT_MAX_BODY, body_timeout: float = DEFAULT_BODY_TIMEOUT
) -> web.Application:
    app = web.Application(middlewares=[_errors], client_max_size=max_body)
    app[BROKER_KEY] = broker
    app[MAX_BODY_KEY] = max_body
    app[BODY_TIMEOUT_KEY] = body_timeout
    app.router.add_route("*", API_PREFIX + "/{path:.*}", kbs_api)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.cleanup_ctx.append(_broker_lifetime)
    return app


async def _broker_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The broker's storage loaded before the first request, its session sweeper running while
    the application serves; on the way out the policy engines are released on this thread and the
    storage is closed."""
    broker = app[BROKER_KEY]
    await broker.start()
    sweeper = broker.sweeper
    task = asyncio.create_task(sweeper.run()) if sweeper is not None else None
    try:
        yield
    finally:
        if sweeper is not None and task is not None:
            await sweeper.stop(task)
        broker.policy.release()
        await broker.close()
