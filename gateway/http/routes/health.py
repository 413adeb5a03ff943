"""Liveness, readiness, and the federation's health (see docs/health.md)."""

from aiohttp import web

from gateway.http.auth import add_route
from gateway.http.routes.keys import CENTERS, HEALTH, STORE


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Ready when the store answers; for load balancers, so public and cheap."""
    centers = len(request.app[CENTERS]) if CENTERS in request.app else 0
    body: dict[str, object] = {"config": "loaded", "centers": centers}
    try:
        await request.app[STORE].ping()
    except Exception as exc:  # any failure of the store means not ready
        error = str(exc) or type(exc).__name__
        return web.json_response({"status": "not ready", "store": error, **body}, status=503)
    return web.json_response({"status": "ready", "store": "ok", **body})


async def health(request: web.Request) -> web.Response:
    return web.json_response(await request.app[HEALTH].report())


def setup_routes(app: web.Application) -> None:
    add_route(app, "GET", "/healthz", healthz, name="healthz", permission=None)
    add_route(app, "GET", "/readyz", readyz, name="readyz", permission=None)
    add_route(app, "GET", "/v1/health", health, name="health", permission="health.read")
