"""The OpenAPI document of this API (public: it holds no data)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.http.auth import add_route
from gateway.http.openapi import build_openapi

#: Filled on first use: every route is registered by then, and the table is static.
_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])


async def openapi_document(request: web.Request) -> web.Response:
    document = request.app[_DOCUMENT]
    if not document:
        document.update(build_openapi(request.app, __version__))
    return web.json_response(document)


def setup_routes(app: web.Application) -> None:
    app[_DOCUMENT] = {}
    add_route(app, "GET", "/v1/openapi.json", openapi_document, name="openapi", permission=None)
