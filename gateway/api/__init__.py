"""HTTP routes, one module per resource."""

from aiohttp import web

from gateway.api import (
    centers,
    dashboard,
    evaluations,
    events,
    files,
    health,
    jobs,
    metrics,
    openapi,
    tokens,
    transfers,
    usage,
)


def setup_routes(app: web.Application) -> None:
    health.setup_routes(app)
    jobs.setup_routes(app)
    events.setup_routes(app)
    centers.setup_routes(app)
    files.setup_routes(app)
    tokens.setup_routes(app)
    transfers.setup_routes(app)
    usage.setup_routes(app)
    evaluations.setup_routes(app)
    metrics.setup_routes(app)
    dashboard.setup_routes(app)
    openapi.setup_routes(app)
