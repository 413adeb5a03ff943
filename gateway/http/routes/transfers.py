"""Transfers between centers: start one, follow it, cancel it."""

from __future__ import annotations

from aiohttp import web

from gateway.data.models import TransferRequest
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.params import body_as, int_query
from gateway.http.routes.keys import TRANSFERS


async def create_transfer(request: web.Request) -> web.Response:
    wanted = await body_as(request, TransferRequest)
    record = await request.app[TRANSFERS].create(request[PRINCIPAL].user, wanted)
    request[AUDIT_TARGET] = {
        "transfer": record.id,
        "source": f"{wanted.source.center}:{wanted.source.path}",
        "destination": f"{wanted.destination.center}:{wanted.destination.path}",
    }
    return web.json_response(
        record.public(), status=202, headers={"Location": f"/v1/transfers/{record.id}"}
    )


async def get_transfer(request: web.Request) -> web.Response:
    owner = request[PRINCIPAL].owner_filter("transfers.read")
    record = await request.app[TRANSFERS].get(owner, request.match_info["id"])
    return web.json_response(record.public())


async def list_transfers(request: web.Request) -> web.Response:
    owner = request[PRINCIPAL].owner_filter("transfers.read")
    limit = int_query(request, "limit", 100, 1, 1000)
    records = await request.app[TRANSFERS].list(owner, limit)
    return web.json_response({"transfers": [r.public() for r in records]})


async def cancel_transfer(request: web.Request) -> web.Response:
    owner = request[PRINCIPAL].owner_filter("transfers.create")
    record = await request.app[TRANSFERS].cancel(owner, request.match_info["id"])
    request[AUDIT_TARGET] = {"transfer": record.id}
    return web.json_response(record.public())


def setup_routes(app: web.Application) -> None:
    for method, path, handler, name, permission in (
        ("POST", "/v1/transfers", create_transfer, "transfers.create", "transfers.create"),
        ("GET", "/v1/transfers", list_transfers, "transfers.list", "transfers.read"),
        ("GET", "/v1/transfers/{id}", get_transfer, "transfers.get", "transfers.read"),
        ("DELETE", "/v1/transfers/{id}", cancel_transfer, "transfers.cancel", "transfers.create"),
    ):
        add_route(app, method, path, handler, name=name, permission=permission)
