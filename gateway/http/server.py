"""The HTTP server the gateway runs on: aiohttp's, with its parser's refusals in the
API's error shape.

aiohttp answers a request its parser cannot read (a header line past
`max_field_size`, a malformed request line, a bad chunk) itself, before any
middleware runs: a plain-text 400 whose text quotes the start of the offending
line, logged at ERROR with that same text. The offending line may be a bearer
token. Here those refusals answer in the one JSON error shape, with a message
that names what was wrong and its limit but never repeats a byte of the request,
and are logged at INFO in the same words. A header line too long to be read that
carries credentials answers 401, as a token the gateway cannot read is refused.

A keep-alive connection's handler keeps its last request and answer until the next
request arrives on it (up to the keep-alive timeout, 75 s): with a body of a few
MiB each way, thirty idle connections would hold hundreds of MiB. Once an answer
is written, the handler here lets go of both bodies.
"""

from __future__ import annotations

import json
import logging
import re

from aiohttp import web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    ContentLengthError,
    HttpProcessingError,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
    TransferEncodingError,
)
from aiohttp.web_protocol import RequestHandler

from gateway.errors import DomainError
from gateway.http.errors import error_body, status_of

log = logging.getLogger("hpcfed.http")

#: The start of a header line (or, from aiohttp's C parser, of its value alone) that
#: carries credentials: `Authorization: Bearer ...`, or the scheme word of its value.
_CREDENTIALS = re.compile(
    rb"^\s*(?:(?:proxy-)?authorization\s*:\s*)?(?:bearer|basic|dpop|negotiate)\s",
    re.IGNORECASE,
)


def parser_refusal(exc: BaseException | None) -> DomainError:
    """What was wrong with a request aiohttp's parser refused. The message is made of
    fixed words and the parser's limits, never the request."""
    if isinstance(exc, LineTooLong):
        line, limit = exc.args[0], exc.args[1]
        start = line if isinstance(line, bytes) else str(line).encode("latin-1", "replace")
        if _CREDENTIALS.match(start):
            return DomainError(
                "unauthenticated",
                f"Authorization: the credentials are longer than {limit} bytes; "
                "no token of this gateway or its providers is that long",
                "Authorization",
            )
        return DomainError(
            "header_too_large",
            f"(headers): a request line or header is longer than {limit} bytes",
            "(headers)",
        )
    if isinstance(exc, BadHttpMethod):
        return DomainError("bad_request", "(request line): not an HTTP request method")
    if isinstance(exc, BadStatusLine | InvalidURLError):
        return DomainError("bad_request", "(request line): not a valid HTTP request line")
    if isinstance(exc, InvalidHeader):
        return DomainError("bad_request", "(headers): a header is not valid HTTP", "(headers)")
    if isinstance(exc, ContentLengthError | TransferEncodingError | PayloadEncodingError):
        return DomainError("bad_request", "(body): the body does not match its framing", "(body)")
    text = str(getattr(exc, "message", "") or "")
    if "Too many headers" in text:
        return DomainError("header_too_large", "(headers): too many header lines", "(headers)")
    return DomainError("bad_request", "(request): not a valid HTTP request")


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler, answering its parser's refusals in the API's
    error shape and logging them without request content."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500 or not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        error = parser_refusal(exc)
        status = status_of(error)
        log.info(
            "refused an unreadable request from %s: %s %s", request.remote, status, error.message
        )
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already; closing the connection")
        unauthenticated = error.code == "unauthenticated"
        headers = {"WWW-Authenticate": 'Bearer realm="hpcfed"'} if unauthenticated else {}
        resp = web.Response(
            status=status,
            body=json.dumps(error_body(error)).encode(),
            content_type="application/json",
            headers=headers,
        )
        resp.force_close()
        return resp

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            release_bodies(request, resp)


def release_bodies(request: web.BaseRequest, resp: web.StreamResponse) -> None:
    """Drop the request body aiohttp cached on `request.read()` and the answer's body,
    once it is written: the connection would hold them while it waits for the next
    request."""
    request._read_bytes = None  # the cache `read()` fills; nothing reads it after this
    if isinstance(resp, web.Response):
        resp.body = None


class _GatewayServer(web.Server):
    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """`web.AppRunner` whose connections are handled by `GatewayRequestHandler`."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # starts the app up, as AppRunner does
        return _GatewayServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            loop=server._loop,
            **server._kwargs,
        )
