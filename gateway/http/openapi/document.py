"""The OpenAPI 3.1 document, built from the app's router and `ROUTES`: one operation
per registered route, with every status it can answer; request body schemas come from
the pydantic models themselves."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.http.auth import ROUTE_PERMISSIONS
from gateway.http.openapi.route_doc import (
    ERROR_SCHEMA,
    ERROR_STATUSES,
    INT_HEADER,
    TES_ERROR_SCHEMA,
    RouteDoc,
)
from gateway.http.openapi.routes import ROUTES
from gateway.http.routes.dashboard import ASSETS
from gateway.http.routes.keys import CONFIG
from gateway.jobs.models import JobBatch, JobSpec

OPENAPI_VERSION = "3.1.0"
_PATH_PARAM = re.compile(r"\{([^}/]+)\}")

#: The models of JSON request bodies: those the routes in ROUTES name.
_BODY_MODELS: tuple[type[BaseModel], ...] = tuple(
    dict.fromkeys(doc.body for doc in ROUTES.values() if isinstance(doc.body, type))
)


@dataclass(frozen=True)
class RegisteredRoute:
    name: str
    method: str
    path: str
    permission: str | None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)


def registered_routes(app: web.Application) -> list[RegisteredRoute]:
    """Every named route of the app's router, with the permission add_route gave it."""
    table = app.get(ROUTE_PERMISSIONS, {})
    found = []
    for route in app.router.routes():
        if route.name is None or route.method == "*":
            continue
        path = route.resource.canonical if route.resource is not None else ""
        found.append(RegisteredRoute(route.name, route.method, path, table.get(route.name)))
    return found


def undocumented_routes(app: web.Application) -> list[str]:
    """Routes with no entry in ROUTES, or whose path parameters the entry does not name."""
    missing = []
    for route in registered_routes(app):
        doc = ROUTES.get(route.name)
        if doc is None or set(doc.path_params) != set(route.path_params):
            missing.append(route.name)
    return missing


def _error_response(description: str, schema: str = "Error") -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


#: Path parameters whose form the server checks before looking anything up.
_PATH_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "index": {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "stream": {"type": "string", "enum": ["stdout", "stderr"]},
    "file": {"type": "string", "enum": sorted(ASSETS)},
}
#: One server-sent event of a job stream: `data` is the job record (one line of JSON);
#: or, first on a user stream resumed after an id older than the gateway keeps,
#: `resync` (`data`: {"reason": ...}): re-read the jobs, changes may have been missed.
_SSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"enum": ["job", "resync"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}

#: Routes whose bodies are streamed, and so never over limits.max_body.
_STREAMED = ("files.upload", "jobs.upload_input")


def error_statuses(route: RegisteredRoute, doc: RouteDoc) -> list[int]:
    """Every error status the route can answer."""
    statuses = {400, 431, *doc.errors}
    if route.name not in _STREAMED:
        statuses.add(413)
    if route.permission is not None:
        statuses |= {401, 403, 429}
    if route.path_params:
        statuses.add(404)
    if isinstance(doc.body, type):
        statuses.add(422)
    if doc.at_center or "center" in route.path_params:
        statuses |= {403, 404, 502, 503}
    if isinstance(doc.body, type) and doc.body in (JobSpec, JobBatch):
        statuses |= {413, 422, 503}
    return sorted(statuses)


def _headers(spec: dict[str, tuple[bool, dict[str, Any]]]) -> dict[str, Any]:
    return {
        name: {"required": required, "schema": schema} for name, (required, schema) in spec.items()
    }


def _operation(route: RegisteredRoute) -> dict[str, Any]:
    doc = ROUTES.get(route.name) or RouteDoc("(undocumented)")
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": doc.path_params.get(name, ""),
            "schema": _PATH_PARAM_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in route.path_params
    ]
    for param in doc.params:
        parameters.append(
            {
                "name": param.name,
                "in": param.where,
                "required": param.required,
                "description": param.description,
                "schema": param.schema(),
            }
        )
    responses: dict[str, Any] = {}
    for status, description in doc.responses.items():
        answer: dict[str, Any] = {"description": description}
        if status in doc.media:
            media = doc.media[status]
            schema = _SSE_SCHEMA if media == "text/event-stream" else {"type": "string"}
            answer["content"] = {media: {"schema": schema}}
        if status in doc.headers:
            answer["headers"] = _headers(doc.headers[status])
        responses[str(status)] = answer
    for status in error_statuses(route, doc):
        answer = _error_response(ERROR_STATUSES[status], doc.error_schema)
        if status in doc.headers:
            answer["headers"] = _headers(doc.headers[status])
        if status == 429:
            answer["headers"] = _headers({"Retry-After": (True, INT_HEADER)})
        responses.setdefault(str(status), answer)
    operation: dict[str, Any] = {
        "operationId": route.name,
        "summary": doc.summary,
        "tags": [route.name.split(".", 1)[0]],
        "parameters": parameters,
        "responses": responses,
        "security": [] if route.permission is None else [{"bearer": []}],
    }
    if route.permission is not None:
        operation["x-permission"] = route.permission
    if isinstance(doc.body, type):
        ref = {"$ref": f"#/components/schemas/{doc.body.__name__}"}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref}},
        }
    elif doc.body == "binary":
        operation["requestBody"] = {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            },
        }
    return operation


def _schemas(max_ttl: float | None = None) -> dict[str, Any]:
    by_model, top = models_json_schema(
        [(model, "validation") for model in _BODY_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for (model, _), schema in by_model.items():
        if "$ref" not in schema:
            schemas[model.__name__] = schema
    schemas["Error"] = ERROR_SCHEMA
    schemas["TesError"] = TES_ERROR_SCHEMA
    if max_ttl is not None:
        # TokenIssuer.issue: a positive number of seconds, at most auth.max_ttl.
        ttl = {"type": "number", "exclusiveMinimum": 0, "maximum": max_ttl}
        schemas["TokenRequest"]["properties"]["ttl"]["anyOf"] = [ttl, {"type": "null"}]
    return schemas


def _max_ttl(app: web.Application) -> float | None:
    config = app.get(CONFIG)
    return None if config is None else float(config.gateway.auth.max_ttl)


def build_openapi(app: web.Application, version: str = "0.1.0") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in registered_routes(app):
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "hpcfed federation gateway",
            "version": version,
            "description": "One HTTP API over Slurm, PBS and local HPC centers.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _schemas(_max_ttl(app)),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
