"""The KBS's HTTP server around `kbs.app`: aiohttp's own refusals as upstream's error JSON, and timeouts.

aiohttp answers a request it cannot parse (a malformed request line, a header over the size limit)
itself, before any middleware, with a text body that repeats the offending bytes; here those answers
are `ErrorInformation` (400, or 431 for a line or header over the limit) that quote nothing.

Timeouts: aiohttp's keep-alive timer starts when a connection opens and again after each response,
and closes the connection if, when it fires, no complete request head has arrived -- partial data
does not reset it. So `idle_timeout` bounds both an idle connection and a request line or headers
trickling in; `kbs.app` bounds the body with its own timeout.
"""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from kbs import errors
from kbs.app import DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_BODY, error_response, make_app
from kbs.broker import Broker
from kbs.errors import KbsError
from kbs.jwt import MAX_TOKEN_CHARS

log = logging.getLogger(__name__)
# Any token /attest issues must pass in `Authorization: Bearer` too (upstream's 128 KiB refused
# verbose multi-device tokens, trustee#1563).
MAX_HEADER_FIELD = MAX_TOKEN_CHARS + 1024
DEFAULT_IDLE_TIMEOUT = 30.0


def _refusal(status: int, exc: BaseException | None) -> KbsError:
    if isinstance(exc, LineTooLong):
        return errors.http_error(431, "the request line or a header is over the size limit")
    if isinstance(exc, HttpProcessingError) or 400 <= status < 500:
        return errors.http_error(400, "malformed HTTP request")
    return errors.internal_error()


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's own error answer, as `ErrorInformation` that never quotes the request."""
        if request.writer.output_size > 0:
            raise ConnectionError("a response was partly sent: no error answer is possible")
        refusal = _refusal(status, exc)
        if refusal.status >= 500:
            log.error("HTTP server error", exc_info=exc)
        else:  # the exception's text would quote the request
            log.info("refused (%s): %s", type(exc).__name__, refusal.detail)
        response = error_response(refusal)
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # the same server; only its connections get `_Handler`
        return server


def make_runner(
    broker: Broker,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
) -> web.AppRunner:
    """The runner serving the KBS application (set it up, then add sites)."""
    return _Runner(
        make_app(broker, max_body, body_timeout),
        max_field_size=MAX_HEADER_FIELD,
        keepalive_timeout=idle_timeout,
        access_log=None,
    )
