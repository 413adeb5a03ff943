"""Liveness."""

from aiohttp import web

from gateway.auth import add_route


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def setup_routes(app: web.Application) -> None:
    add_route(app, "GET", "/healthz", healthz, name="healthz", permission=None)
