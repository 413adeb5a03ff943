"""HTTP routes, one module per resource."""

from aiohttp import web

from gateway.api import centers, health, jobs, tokens


def setup_routes(app: web.Application) -> None:
    health.setup_routes(app)
    jobs.setup_routes(app)
    centers.setup_routes(app)
    tokens.setup_routes(app)
