"""GA4GH TES v1.1 at /ga4gh/tes/v1: its own sub-app over the gateway's services
(gateway/tes/service.py), with the same tokens, limits, audit and metrics.

Errors answer in the shape GA4GH APIs share, `{"msg": ..., "status_code": ...}`,
with the gateway's `code` and the `field` at fault; a request the schema refuses is
400 (TES has no 422)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gateway import __version__
from gateway.errors import DomainError, Unprocessable
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, ROUTE_PERMISSIONS, add_route
from gateway.http.errors import ERROR_RENDERER, error_middleware_for, status_of
from gateway.http.params import int_query, json_body
from gateway.http.routes.keys import TES
from gateway.tes.models import TES_STATES, View
from gateway.tes.service import DEFAULT_PAGE, MAX_PAGE, TaskQuery

PREFIX = "/ga4gh/tes/v1"
VIEWS: tuple[View, ...] = ("MINIMAL", "BASIC", "FULL")


def tes_error(error: DomainError) -> web.Response:
    status = status_of(error)
    if isinstance(error, Unprocessable) and error.code != "unsatisfiable":
        status = 400
    body: dict[str, Any] = {
        **error.details,
        "msg": error.message,
        "status_code": status,
        "code": error.code,
    }
    return web.json_response(body, status=status)


def _view(request: web.Request) -> View:
    view = request.query.get("view", "MINIMAL")
    if view not in VIEWS:
        raise DomainError("invalid_request", f"view: one of {', '.join(VIEWS)}", "view")
    return view  # type: ignore[return-value]


def _owner(request: web.Request) -> str:
    return request[PRINCIPAL].user


async def service_info(request: web.Request) -> web.Response:
    tes = request.config_dict[TES]
    return web.json_response(
        {
            "id": "org.hpcfed.tes",
            "name": "hpcfed GA4GH TES",
            "type": {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"},
            "description": "GA4GH Task Execution Service over the hpcfed federation's centers",
            "organization": {"name": "hpcfed", "url": "https://hpcfed.org"},
            "version": __version__,
            "storage": tes.storage(),
            "tesResources_backend_parameters": tes.backend_parameters(),
        }
    )


async def service_info_v1_0(request: web.Request) -> web.Response:
    """TES 1.0's service-info (`/tasks/service-info`), for its clients (py-tes 0.4, which
    Snakemake's TES executor uses)."""
    tes = request.config_dict[TES]
    return web.json_response(
        {
            "name": "hpcfed GA4GH TES",
            "doc": "GA4GH Task Execution Service over the hpcfed federation's centers; "
            "GET /ga4gh/tes/v1/service-info describes it in TES 1.1's terms",
            "storage": tes.storage(),
        }
    )


async def create_task(request: web.Request) -> web.Response:
    body = await json_body(request)
    task_id = await request.config_dict[TES].create(_owner(request), body)
    request[AUDIT_TARGET] = {"task": task_id}
    return web.json_response({"id": task_id})


async def list_tasks(request: web.Request) -> web.Response:
    q = request.query
    state = q.get("state")
    if state is not None and state not in TES_STATES:
        raise DomainError("invalid_request", f"state: one of {', '.join(TES_STATES)}", "state")
    keys, values = q.getall("tag_key", []), q.getall("tag_value", [])
    if len(values) > len(keys):
        raise DomainError("invalid_request", "tag_value: more values than tag_key", "tag_value")
    tags = {key: values[i] if i < len(values) else "" for i, key in enumerate(keys)}
    query = TaskQuery(
        owner=_owner(request),
        name_prefix=q.get("name_prefix") or None,
        state=state,
        tags=tags,
        page_size=int_query(request, "page_size", DEFAULT_PAGE, 1, MAX_PAGE),
        page_token=q.get("page_token") or None,
        view=_view(request),
    )
    return web.json_response(await request.config_dict[TES].list(query))


async def get_task(request: web.Request) -> web.Response:
    tes = request.config_dict[TES]
    task = await tes.get(_owner(request), request.match_info["id"], _view(request))
    return web.json_response(task)


async def cancel_task(request: web.Request) -> web.Response:
    task_id = request.match_info["id"]
    await request.config_dict[TES].cancel(_owner(request), task_id)
    request[AUDIT_TARGET] = {"task": task_id}
    return web.json_response({})


def tes_app(parent: web.Application) -> web.Application:
    """The sub-app, its routes' permissions known to the parent's auth middleware."""
    app = web.Application(middlewares=[error_middleware_for(tes_error)])
    app[ERROR_RENDERER] = tes_error
    for method, path, handler, name, permission in (
        ("GET", "/service-info", service_info, "tes.service_info", "jobs.read"),
        # Before /tasks/{id}, which the path would match too.
        ("GET", "/tasks/service-info", service_info_v1_0, "tes.service_info_v1_0", "jobs.read"),
        ("GET", "/tasks", list_tasks, "tes.list", "jobs.read"),
        ("POST", "/tasks", create_task, "tes.create", "jobs.submit"),
        # A task's id holds no ':', so that /tasks/{id}:cancel is a resource of its own.
        ("GET", "/tasks/{id:[^{}/:]+}", get_task, "tes.get", "jobs.read"),
        ("POST", "/tasks/{id:[^{}/:]+}:cancel", cancel_task, "tes.cancel", "jobs.cancel"),
    ):
        add_route(app, method, path, handler, name=name, permission=permission)
    table = parent.setdefault(ROUTE_PERMISSIONS, {})
    for name, permission in app[ROUTE_PERMISSIONS].items():
        if name in table:
            raise ValueError(f"route {name} is registered twice")
        table[name] = permission
    return app


def setup_routes(parent: web.Application) -> None:
    parent.add_subapp(PREFIX, tes_app(parent))
