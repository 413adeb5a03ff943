"""The operators' dashboard: a static page that calls the API with the operator's token.

The page and its assets are public: they hold no data. Everything they show comes
from the API, under the token the operator gives the page.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

from gateway.errors import DomainError
from gateway.http.auth import add_route

DASHBOARD_DIR = Path(__file__).resolve().parent.parent / "dashboard"
#: The files served, and their content types; nothing else in (or outside) the directory is.
ASSETS: dict[str, str] = {
    "index.html": "text/html",
    "dashboard.js": "text/javascript",
    "dashboard.css": "text/css",
}
#: Only our own scripts, styles and API: no inline code, no other origin.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _asset(name: str) -> web.Response:
    content_type = ASSETS.get(name)
    if content_type is None:
        raise DomainError("not_found", f"no dashboard file {name!r}")
    body = await asyncio.to_thread((DASHBOARD_DIR / name).read_bytes)
    return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)


async def dashboard_page(request: web.Request) -> web.Response:
    return await _asset("index.html")


async def dashboard_file(request: web.Request) -> web.Response:
    return await _asset(request.match_info["file"])


def setup_routes(app: web.Application) -> None:
    add_route(app, "GET", "/dashboard", dashboard_page, name="dashboard.page", permission=None)
    add_route(
        app, "GET", "/dashboard/{file}", dashboard_file, name="dashboard.file", permission=None
    )
