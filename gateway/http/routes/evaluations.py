"""Access evaluations of a center: start one, follow it, read its report."""

from __future__ import annotations

from aiohttp import web

from gateway.centers.evaluation.render import render_markdown
from gateway.errors import DomainError
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.params import int_query
from gateway.http.routes.keys import CENTERS, EVALUATIONS


def _center(request: web.Request) -> str:
    return request.app[CENTERS].get(request.match_info["center"]).id  # 404 if unknown


async def start_evaluation(request: web.Request) -> web.Response:
    center = _center(request)
    record = await request.app[EVALUATIONS].start(center, request[PRINCIPAL].user)
    request[AUDIT_TARGET] = {"center": center, "evaluation": record.id}
    return web.json_response(
        record.public(),
        status=202,
        headers={"Location": f"/v1/centers/{center}/evaluations/{record.id}"},
    )


async def list_evaluations(request: web.Request) -> web.Response:
    center = _center(request)
    limit = int_query(request, "limit", 50, 1, 1000)
    records = await request.app[EVALUATIONS].list(center, limit)
    return web.json_response({"evaluations": [r.public() for r in records]})


async def get_evaluation(request: web.Request) -> web.Response:
    center = _center(request)
    record = await request.app[EVALUATIONS].get(center, request.match_info["eid"])
    wanted = request.query.get("format", "json")
    if wanted == "markdown":
        return web.Response(text=render_markdown(record), content_type="text/markdown")
    if wanted != "json":
        raise DomainError(
            "invalid_request",
            f"format: must be json or markdown, got {wanted!r}",
            field="format",
        )
    return web.json_response(record.public())


def setup_routes(app: web.Application) -> None:
    base = "/v1/centers/{center}/evaluations"
    for method, path, handler, name, permission in (
        ("POST", base, start_evaluation, "evaluations.start", "centers.admin"),
        ("GET", base, list_evaluations, "evaluations.list", "centers.read"),
        ("GET", base + "/{eid}", get_evaluation, "evaluations.get", "centers.read"),
    ):
        add_route(app, method, path, handler, name=name, permission=permission)
