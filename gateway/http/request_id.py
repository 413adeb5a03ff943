"""A request id for every HTTP request: taken from the client's `X-Request-Id`
when it is a sane token, else made here; echoed in the answer and set in
`adapters.context.REQUEST_ID`, so the logs of the work done for the request
(down to its SSH commands, in worker threads) carry it."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web

from adapters.context import REQUEST_ID

HEADER = "X-Request-Id"
_VALID = re.compile(r"^[A-Za-z0-9._-]{1,64}\Z")
REQUEST_ID_KEY = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def request_id_of(header: str | None) -> str:
    """The client's id if it is 1-64 of [A-Za-z0-9._-], else a fresh one."""
    if header is not None and _VALID.match(header):
        return header
    return uuid.uuid4().hex


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = request_id_of(request.headers.get(HEADER))
    request[REQUEST_ID_KEY] = rid
    token = REQUEST_ID.set(rid)
    try:
        return await handler(request)
    finally:
        REQUEST_ID.reset(token)


async def _echo(request: web.Request, response: web.StreamResponse) -> None:
    # At prepare time, so streamed answers (whose headers leave early) carry it too.
    rid = request.get(REQUEST_ID_KEY)
    if rid is not None:
        response.headers[HEADER] = rid


def setup_request_id(app: web.Application) -> None:
    app.on_response_prepare.append(_echo)
