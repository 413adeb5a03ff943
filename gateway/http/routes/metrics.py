"""GET /metrics: the gateway's metrics in Prometheus text format."""

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from gateway.http.auth import add_route
from gateway.http.metrics import METRICS
from gateway.http.routes.keys import CENTERS, STORE


async def metrics(request: web.Request) -> web.Response:
    gathered = request.app[METRICS]
    # The jobs gauge is read from the store now; the collectors themselves are sync.
    gathered.jobs.counts = await request.app[STORE].count_by_center_state()
    gathered.jobs.centers = {c.id for c in request.app[CENTERS]}
    response = web.Response(body=gathered.render())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def setup_routes(app: web.Application) -> None:
    add_route(app, "GET", "/metrics", metrics, name="metrics", permission="metrics.read")
