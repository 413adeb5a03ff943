"""Centers: what is configured, whether each is admitted, and its computing power."""

from aiohttp import web

from gateway.http.auth import add_route
from gateway.http.params import bool_query
from gateway.http.routes.keys import CENTERS, POWER


async def list_centers(request: web.Request) -> web.Response:
    power = request.app[POWER]
    centers = []
    for center in request.app[CENTERS]:
        admission = await power.admission(center.id)
        centers.append({**center.public(), "admission": admission.model_dump(mode="json")})
    return web.json_response({"centers": centers})


async def get_center(request: web.Request) -> web.Response:
    center = request.app[CENTERS].get(request.match_info["center"])
    admission = await request.app[POWER].admission(center.id)
    return web.json_response({**center.public(), "admission": admission.model_dump(mode="json")})


async def computing_power(request: web.Request) -> web.Response:
    """The standard descriptor; `?refresh=true` asks the scheduler now, not the cache."""
    center = request.app[CENTERS].get(request.match_info["center"])
    refresh = bool_query(request, "refresh")
    document = await request.app[POWER].descriptor(center.id, max_age=0 if refresh else None)
    return web.json_response(document)


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
    add_route(
        app,
        "GET",
        "/v1/centers/{center}/computing-power",
        computing_power,
        name="centers.computing_power",
        permission="centers.read",
    )
