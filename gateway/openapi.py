"""The OpenAPI 3.1 document of the HTTP API, built from one table of route descriptions.

`ROUTES` describes every route by the name it is registered under (`add_route`);
the document walks the app's router, so a route added without an entry here shows
up in `undocumented_routes` (a test fails on it) and as "undocumented" in the
document. Request body schemas come from the pydantic models themselves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api.files import MkdirRequest, RenameRequest
from gateway.api.tokens import TokenRequest
from gateway.auth import ROUTE_PERMISSIONS
from gateway.models import JobBatch, JobSpec, TransferRequest

OPENAPI_VERSION = "3.1.0"
_PATH_PARAM = re.compile(r"\{([^}/]+)\}")

ParamType = Literal["string", "integer", "boolean"]


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter; `where` says which."""

    name: str
    type: ParamType = "string"
    description: str = ""
    required: bool = False
    where: Literal["query", "header"] = "query"
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum:
            schema["enum"] = list(self.enum)
        return schema


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    #: Path parameter -> description; must name exactly the route's `{...}` parts.
    path_params: dict[str, str] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    #: A pydantic model for a JSON body, "binary" for a raw streamed body, None: no body.
    body: type[BaseModel] | Literal["binary"] | None = None
    #: Status -> description of the answers besides the common errors.
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})


_ID = "the gateway's id of the job (a UUID)"
_CENTER = "a center id, as in GET /v1/centers"
_PATH = Param("path", description="a path at the center, confined to the caller's roots")
_PATH_REQUIRED = Param("path", required=True, description=_PATH.description)
_LIMIT = Param("limit", "integer", "at most this many", minimum=1, maximum=1000)
_SHA256 = Param(
    "X-Checksum-Sha256", where="header", description="64 hex digits; checked after the write"
)

#: Route name -> its description. Every route registered with add_route has one.
ROUTES: dict[str, RouteDoc] = {
    "healthz": RouteDoc("Liveness: the process answers"),
    "readyz": RouteDoc("Readiness: the store answers", responses={200: "ready", 503: "not ready"}),
    "health": RouteDoc("Federation health: every center's probes and breaker state"),
    "auth.jwks": RouteDoc("Public keys that verify this gateway's tokens (JWKS)"),
    "openapi": RouteDoc("This OpenAPI document"),
    "jobs.submit": RouteDoc(
        "Submit a job",
        params=(
            Param(
                "Idempotency-Key",
                where="header",
                description="1-200 printable ASCII characters; a repeat returns the same job",
            ),
        ),
        body=JobSpec,
        responses={
            200: "the job of this Idempotency-Key, submitted before",
            201: "submitted to its center",
            202: "stored; the center's answer is pending",
        },
    ),
    "jobs.batch": RouteDoc(
        "Submit independent jobs at once (up to 1000)",
        params=(
            Param(
                "Idempotency-Key",
                where="header",
                description="1-200 printable ASCII characters; job i gets the key <key>#<i>",
            ),
        ),
        body=JobBatch,
        responses={
            201: "every job submitted to its center",
            207: "each job's own status, record or error in `results`",
        },
    ),
    "jobs.list": RouteDoc(
        "List jobs (cursor pagination)",
        params=(
            Param("state", description="comma-separated job states"),
            Param("center", description=_CENTER),
            _LIMIT,
            Param("cursor", description="next_cursor of the previous page"),
        ),
    ),
    "jobs.get": RouteDoc("A job's record", path_params={"id": _ID}),
    "jobs.cancel": RouteDoc(
        "Cancel a job",
        path_params={"id": _ID},
        responses={200: "the job has ended", 202: "cancel requested"},
    ),
    "jobs.output": RouteDoc(
        "A job's stdout or stderr, from an offset; `follow` streams until the job ends",
        path_params={"id": _ID, "stream": "stdout or stderr"},
        params=(
            Param("offset", "integer", "first byte", minimum=0),
            Param("limit", "integer", "at most this many bytes", minimum=1, maximum=4 << 20),
            Param("follow", "boolean", "keep streaming until the job has ended"),
            Param("element", "integer", "array element index", minimum=0),
        ),
        responses={200: "bytes (application/octet-stream)"},
    ),
    "jobs.upload_input": RouteDoc(
        "Upload an `upload: true` input of a job (streamed)",
        path_params={"id": _ID, "index": "index in the spec's inputs"},
        params=(_SHA256,),
        body="binary",
    ),
    "jobs.events": RouteDoc(
        "A job's state changes (server-sent events) until it ends",
        path_params={"id": _ID},
        params=(Param("Last-Event-ID", where="header", description="resume after this event"),),
        responses={200: "text/event-stream"},
    ),
    "events.list": RouteDoc(
        "State changes of the caller's jobs (server-sent events)",
        params=(Param("Last-Event-ID", where="header", description="resume after this event"),),
        responses={200: "text/event-stream"},
    ),
    "centers.list": RouteDoc("The configured centers and their admission"),
    "centers.get": RouteDoc("One center and its admission", path_params={"center": _CENTER}),
    "centers.computing_power": RouteDoc(
        "The center's computing-power descriptor",
        path_params={"center": _CENTER},
        params=(Param("refresh", "boolean", "ask the scheduler now, not the cache"),),
    ),
    "usage.read": RouteDoc(
        "Core-hours, GPU-hours and cost of finished jobs",
        params=(
            Param("user", description="whose usage (researchers: only their own)"),
            Param("center", description=_CENTER),
            Param("since", description="ISO 8601 date or time"),
            Param("until", description="ISO 8601 date or time"),
            Param("group_by", description="comma-separated: user, center, ..."),
            Param("jobs", "boolean", "list the jobs too"),
        ),
    ),
    "tokens.issue": RouteDoc(
        "Issue a token (admins)", body=TokenRequest, responses={201: "the token"}
    ),
    "files.roots": RouteDoc(
        "The caller's roots and login at a center", path_params={"center": _CENTER}
    ),
    "files.list": RouteDoc("List a directory", path_params={"center": _CENTER}, params=(_PATH,)),
    "files.stat": RouteDoc(
        "Stat a path", path_params={"center": _CENTER}, params=(_PATH_REQUIRED,)
    ),
    "files.checksum": RouteDoc(
        "sha256 of a file, computed at the center",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED,),
    ),
    "files.download": RouteDoc(
        "Download a file (streamed; one Range)",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, Param("Range", where="header", description="bytes=START-END")),
        responses={200: "the file", 206: "the range", 416: "range not satisfiable"},
    ),
    "files.head": RouteDoc(
        "A file's size and date",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, Param("Range", where="header", description="bytes=START-END")),
        responses={200: "headers only", 206: "headers of the range"},
    ),
    "files.upload": RouteDoc(
        "Upload a file (streamed; resume with offset)",
        path_params={"center": _CENTER},
        params=(
            _PATH_REQUIRED,
            Param("offset", "integer", "write from this byte", minimum=0),
            Param("overwrite", "boolean", "replace an existing file (default true)"),
            _SHA256,
        ),
        body="binary",
        responses={200: "written over an existing file", 201: "created"},
    ),
    "files.mkdir": RouteDoc(
        "Make a directory",
        path_params={"center": _CENTER},
        body=MkdirRequest,
        responses={200: "it existed", 201: "created"},
    ),
    "files.rename": RouteDoc(
        "Rename or move a path", path_params={"center": _CENTER}, body=RenameRequest
    ),
    "files.remove": RouteDoc(
        "Remove a path",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, Param("recursive", "boolean", "remove a directory's contents")),
        responses={204: "removed"},
    ),
    "transfers.create": RouteDoc(
        "Start a transfer between centers", body=TransferRequest, responses={202: "queued"}
    ),
    "transfers.list": RouteDoc("The caller's transfers", params=(_LIMIT,)),
    "transfers.get": RouteDoc("One transfer", path_params={"id": "the transfer's id"}),
    "transfers.cancel": RouteDoc("Cancel a transfer", path_params={"id": "the transfer's id"}),
    "evaluations.start": RouteDoc(
        "Start an access evaluation of a center",
        path_params={"center": _CENTER},
        responses={202: "started", 409: "one is already running"},
    ),
    "evaluations.list": RouteDoc(
        "A center's evaluations", path_params={"center": _CENTER}, params=(_LIMIT,)
    ),
    "evaluations.get": RouteDoc(
        "One evaluation and its report",
        path_params={"center": _CENTER, "eid": "the evaluation's id"},
        params=(Param("format", description="json or markdown", enum=("json", "markdown")),),
    ),
    "metrics": RouteDoc("Prometheus metrics", responses={200: "text/plain exposition format"}),
    "dashboard.page": RouteDoc("The operators' dashboard page", responses={200: "text/html"}),
    "dashboard.file": RouteDoc(
        "A dashboard asset", path_params={"file": "index.html, dashboard.js or dashboard.css"}
    ),
}

#: The one error shape (gateway/errors.py); details such as `center` vary by code.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the parameter or field at fault"},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    },
                },
            },
            "additionalProperties": True,
        }
    },
}
_BODY_MODELS: tuple[type[BaseModel], ...] = (
    JobSpec,
    JobBatch,
    TransferRequest,
    TokenRequest,
    MkdirRequest,
    RenameRequest,
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


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _operation(route: RegisteredRoute) -> dict[str, Any]:
    doc = ROUTES.get(route.name) or RouteDoc("(undocumented)")
    parameters: list[dict[str, Any]] = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "description": doc.path_params.get(name, ""),
            "schema": {"type": "string"},
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
    responses: dict[str, Any] = {str(s): {"description": d} for s, d in doc.responses.items()}
    errors = {"400": "invalid parameter or body", "404": "not found", "429": "rate limited"}
    if doc.body is not None:
        errors["413"] = "body too large"
    if isinstance(doc.body, type):
        errors["422"] = "invalid body; `field` names the first problem"
    if route.permission is not None:
        errors["401"] = "no valid bearer token"
        errors["403"] = "the token's roles lack the permission"
    for status, description in errors.items():
        responses.setdefault(status, _error_response(description))
    responses["default"] = _error_response("an error, in the one error shape")
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


def _schemas() -> dict[str, Any]:
    by_model, top = models_json_schema(
        [(model, "validation") for model in _BODY_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    for (model, _), schema in by_model.items():
        if "$ref" not in schema:
            schemas[model.__name__] = schema
    schemas["Error"] = ERROR_SCHEMA
    return schemas


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
            "schemas": _schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
