"""Centers: what is configured."""

from aiohttp import web

from gateway.api.keys import CENTERS
from gateway.auth import add_route


async def list_centers(request: web.Request) -> web.Response:
    centers = request.app[CENTERS]
    return web.json_response({"centers": [c.public() for c in centers]})


async def get_center(request: web.Request) -> web.Response:
    center = request.app[CENTERS].get(request.match_info["center"])
    return web.json_response(center.public())


def setup_routes(app: web.Application) -> None:
    add_route(
        app, "GET", "/v1/centers", list_centers, name="centers.list", permission="centers.read"
    )
    add_route(
        app,
        "GET",
        "/v1/centers/{center}",
        get_center,
        name="centers.get",
        permission="centers.read",
    )
