"""The application catalog: what each application is, which centers offer which
version and how their canaries went; admins put and delete definitions; a center's
admin runs its canaries."""

from __future__ import annotations

from aiohttp import web

from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.params import json_body
from gateway.http.routes.keys import APPS, CANARIES, CENTERS


async def list_apps(request: web.Request) -> web.Response:
    """Every application; `?center=` keeps only that center's offers."""
    center = request.query.get("center")
    if center is not None:
        center = request.app[CENTERS].get(center).id  # 404 if unknown
    return web.json_response({"apps": await request.app[APPS].listing(center)})


async def get_app(request: web.Request) -> web.Response:
    return web.json_response(await request.app[APPS].show(request.match_info["name"]))


async def put_app(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    document = await json_body(request)
    await request.app[APPS].put(name, document, request[PRINCIPAL].user)
    request[AUDIT_TARGET] = {"app": name}
    return web.json_response(await request.app[APPS].show(name))


async def delete_app(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await request.app[APPS].delete(name)
    request[AUDIT_TARGET] = {"app": name}
    return web.Response(status=204)


async def start_canaries(request: web.Request) -> web.Response:
    center = request.app[CENTERS].get(request.match_info["center"]).id
    run = await request.app[CANARIES].start(center)
    request[AUDIT_TARGET] = {"center": center, "canaries": run.id}
    return web.json_response(run.public(), status=202)


def setup_routes(app: web.Application) -> None:
    for method, path, handler, name, permission in (
        ("GET", "/v1/apps", list_apps, "apps.list", "centers.read"),
        ("GET", "/v1/apps/{name}", get_app, "apps.get", "centers.read"),
        ("PUT", "/v1/apps/{name}", put_app, "apps.put", "apps.admin"),
        ("DELETE", "/v1/apps/{name}", delete_app, "apps.delete", "apps.admin"),
        (
            "POST",
            "/v1/centers/{center}/app-canaries",
            start_canaries,
            "apps.canaries",
            "centers.admin",
        ),
    ):
        add_route(app, method, path, handler, name=name, permission=permission)
