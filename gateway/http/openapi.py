"""The OpenAPI 3.1 document of the HTTP API, built from one table of route descriptions.

`ROUTES` describes every route by the name it is registered under (`add_route`);
the document walks the app's router, so a route added without an entry here shows
up in `undocumented_routes` (a test fails on it) and as "undocumented" in the
document. Request body schemas come from the pydantic models themselves.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.data.models import TransferRequest
from gateway.fields import PATH_MAX_CHARS, PATH_PATTERN
from gateway.http.auth import ROUTE_PERMISSIONS
from gateway.http.params import BOOLEAN_PATTERN, CURSOR_PATTERN, INTEGER_PATTERN, STATES_PATTERN
from gateway.http.routes.dashboard import ASSETS
from gateway.http.routes.files import MkdirRequest, RenameRequest
from gateway.http.routes.keys import CONFIG
from gateway.http.routes.tokens import TokenRequest
from gateway.http.routes.usage import GROUP_BY_PATTERN, TIME_PATTERN
from gateway.jobs.models import JobBatch, JobSpec
from gateway.jobs.usage import GROUPS

OPENAPI_VERSION = "3.1.0"
_PATH_PARAM = re.compile(r"\{([^}/]+)\}")

ParamType = Literal["string", "integer", "boolean"]


@dataclass(frozen=True)
class Param:
    """A query (or header) parameter; `where` says which. `pattern` is the rule the
    server applies to the raw value (gateway/http/params.py holds the shared ones)."""

    name: str
    type: ParamType = "string"
    description: str = ""
    required: bool = False
    where: Literal["query", "header"] = "query"
    minimum: int | None = None
    maximum: int | None = None
    enum: tuple[str, ...] = ()
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.enum:
            schema["enum"] = list(self.enum)
        if self.pattern is not None:
            schema["pattern"] = self.pattern
        if self.min_length is not None:
            schema["minLength"] = self.min_length
        if self.max_length is not None:
            schema["maxLength"] = self.max_length
        return schema


@dataclass(frozen=True)
class RouteDoc:
    summary: str
    #: Path parameter -> description; must name exactly the route's `{...}` parts.
    path_params: dict[str, str] = field(default_factory=dict)
    params: tuple[Param, ...] = ()
    #: A pydantic model for a JSON body, "binary" for a raw streamed body, None: no body.
    body: type[BaseModel] | Literal["binary"] | None = None
    #: Status -> description of the answers besides the errors.
    responses: dict[int, str] = field(default_factory=lambda: {200: "OK"})
    #: Error statuses this route answers besides those every route of its kind does.
    errors: tuple[int, ...] = ()
    #: The route works at a center (as the caller's login there): 403 no identity,
    #: 502 center failed, 503 center unavailable.
    at_center: bool = False
    #: Status -> response header -> (required, schema).
    headers: dict[int, dict[str, tuple[bool, dict[str, Any]]]] = field(default_factory=dict)
    #: Status -> media type of a success answer that is not JSON.
    media: dict[int, str] = field(default_factory=dict)


#: What each error status means; an operation lists those it can answer.
ERROR_STATUSES: dict[int, str] = {
    400: "a malformed request or a parameter out of its rule; `field` names it",
    401: "no valid bearer token (`WWW-Authenticate: Bearer`)",
    403: "the token's roles lack the permission, or the target is outside the caller's reach",
    404: "no such resource (or not the caller's)",
    409: "the resource is in a state that conflicts with the request",
    413: "body over limits.max_body, or a job spec over limits.max_spec",
    416: "the range starts past the end of the file (`Content-Range: bytes */SIZE`)",
    422: "the body is invalid, or the center refused it; `field` names the problem",
    429: "over the per-user request rate (`Retry-After`)",
    431: "a request line or header longer than the parser takes",
    502: "the center is misconfigured or failed",
    503: "the center (or the store) cannot be reached now",
}

_TIME_DESCRIPTION = (
    "a date (2026-12-01) or a date and time, with an offset or Z (UTC without one): "
    "2026-12-01T08:00, 2026-12-01T08:00:00.5+05:30"
)
_ID = "the gateway's id of the job (a UUID)"
_CENTER = "a center id, as in GET /v1/centers"
_PATH = Param(
    "path",
    description="a path at the center, confined to the caller's roots",
    pattern=PATH_PATTERN,
    max_length=PATH_MAX_CHARS,
)
_PATH_REQUIRED = dataclasses.replace(_PATH, required=True)
_LIMIT = Param("limit", "integer", "at most this many", minimum=1, maximum=1000)
_SHA256 = Param(
    "X-Checksum-Sha256",
    where="header",
    description="64 hex digits; checked after the write",
    pattern=r"^[ \t]*[0-9a-fA-F]{64}[ \t]*$",
)


def _flag(name: str, description: str) -> Param:
    return Param(name, description=f"{description}; true or false", pattern=BOOLEAN_PATTERN)


_LAST_EVENT_ID = Param(
    "Last-Event-ID", where="header", description="ignored: streams do not replay events"
)
_IDEMPOTENCY = r"^[\x21-\x7e]{1,200}$"
_INT_HEADER = {"type": "string", "pattern": INTEGER_PATTERN}
_FILE_HEADERS: dict[str, tuple[bool, dict[str, Any]]] = {
    "Accept-Ranges": (True, {"type": "string", "enum": ["bytes"]}),
    "X-File-Size": (True, _INT_HEADER),
    "Last-Modified": (True, {"type": "string"}),
}
_RANGE_HEADERS = {
    **_FILE_HEADERS,
    "Content-Range": (True, {"type": "string", "pattern": r"^bytes [0-9]+-[0-9]+/[0-9]+$"}),
}
_UNSATISFIABLE_HEADERS: dict[str, tuple[bool, dict[str, Any]]] = {
    "Content-Range": (True, {"type": "string", "pattern": r"^bytes \*/[0-9]+$"}),
    "Accept-Ranges": (True, {"type": "string", "enum": ["bytes"]}),
}
_RANGE = Param(
    "Range",
    where="header",
    description="one range: bytes=START-, bytes=START-END or bytes=-SUFFIX",
    pattern=r"^[ \t]*bytes=([0-9]{1,19}-[0-9]{0,19}|-[0-9]{1,19})[ \t]*$",
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
                pattern=_IDEMPOTENCY,
            ),
        ),
        body=JobSpec,
        responses={
            200: "the job of this Idempotency-Key, submitted before",
            201: "submitted to its center",
            202: "stored; the center's answer is pending",
        },
        errors=(404,),
        at_center=True,
    ),
    "jobs.batch": RouteDoc(
        "Submit independent jobs at once (up to 1000)",
        params=(
            Param(
                "Idempotency-Key",
                where="header",
                description="1-200 printable ASCII characters; job i gets the key <key>#<i>",
                pattern=_IDEMPOTENCY,
            ),
        ),
        body=JobBatch,
        responses={
            201: "every job submitted to its center",
            207: "each job's own status, record or error in `results`",
        },
        errors=(404,),
        at_center=True,
    ),
    "jobs.list": RouteDoc(
        "List jobs (cursor pagination)",
        params=(
            Param(
                "state",
                description="comma-separated job states, in any letter case",
                pattern=STATES_PATTERN,
            ),
            Param("center", description=_CENTER),
            _LIMIT,
            Param(
                "cursor",
                description="next_cursor of the previous page; any other value is 400",
                pattern=CURSOR_PATTERN,
            ),
        ),
    ),
    "jobs.get": RouteDoc("A job's record", path_params={"id": _ID}),
    "jobs.cancel": RouteDoc(
        "Cancel a job",
        path_params={"id": _ID},
        responses={200: "the job has ended", 202: "cancel requested"},
        at_center=True,
    ),
    "jobs.output": RouteDoc(
        "A job's stdout or stderr, from an offset; `follow` streams until the job ends",
        path_params={"id": _ID, "stream": "stdout or stderr"},
        params=(
            Param("offset", "integer", "first byte", minimum=0, maximum=1 << 62),
            Param("limit", "integer", "at most this many bytes", minimum=1, maximum=4 << 20),
            _flag("follow", "keep streaming until the job has ended"),
            Param("element", "integer", "array element index", minimum=0, maximum=1 << 31),
        ),
        responses={200: "bytes"},
        media={200: "application/octet-stream"},
        at_center=True,
    ),
    "jobs.upload_input": RouteDoc(
        "Upload an `upload: true` input of a job (streamed)",
        path_params={"id": _ID, "index": "index in the spec's inputs (ASCII digits)"},
        params=(_SHA256,),
        body="binary",
        errors=(409, 422),
        at_center=True,
    ),
    "jobs.events": RouteDoc(
        "A job's state changes (server-sent events) until it ends",
        path_params={"id": _ID},
        params=(_LAST_EVENT_ID,),
        responses={200: "events"},
        media={200: "text/event-stream"},
    ),
    "events.list": RouteDoc(
        "State changes of the caller's jobs (server-sent events)",
        params=(_LAST_EVENT_ID,),
        responses={200: "events"},
        media={200: "text/event-stream"},
    ),
    "centers.list": RouteDoc("The configured centers and their admission"),
    "centers.get": RouteDoc("One center and its admission", path_params={"center": _CENTER}),
    "centers.computing_power": RouteDoc(
        "The center's computing-power descriptor",
        path_params={"center": _CENTER},
        params=(_flag("refresh", "ask the scheduler now, not the cache"),),
        at_center=True,
    ),
    "usage.read": RouteDoc(
        "Core-hours, GPU-hours and cost of finished jobs",
        params=(
            Param("user", description="whose usage (researchers: only their own)"),
            Param("center", description=_CENTER),
            Param("since", description=_TIME_DESCRIPTION, pattern=TIME_PATTERN),
            Param("until", description=_TIME_DESCRIPTION, pattern=TIME_PATTERN),
            Param(
                "group_by",
                description="comma-separated, each at most once: " + ", ".join(GROUPS),
                pattern=GROUP_BY_PATTERN,
            ),
            _flag("jobs", "list the jobs too"),
        ),
        errors=(404,),
    ),
    "tokens.issue": RouteDoc(
        "Issue a token (admins)", body=TokenRequest, responses={201: "the token"}
    ),
    "files.roots": RouteDoc(
        "The caller's roots and login at a center",
        path_params={"center": _CENTER},
        at_center=True,
    ),
    "files.list": RouteDoc(
        "List a directory",
        path_params={"center": _CENTER},
        params=(_PATH,),
        errors=(409,),
        at_center=True,
    ),
    "files.stat": RouteDoc(
        "Stat a path", path_params={"center": _CENTER}, params=(_PATH_REQUIRED,), at_center=True
    ),
    "files.checksum": RouteDoc(
        "sha256 of a file, computed at the center",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED,),
        errors=(409,),
        at_center=True,
    ),
    "files.download": RouteDoc(
        "Download a file (streamed; one Range)",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _RANGE),
        responses={200: "the file", 206: "the range"},
        errors=(409, 416),
        headers={200: _FILE_HEADERS, 206: _RANGE_HEADERS, 416: _UNSATISFIABLE_HEADERS},
        media={200: "application/octet-stream", 206: "application/octet-stream"},
        at_center=True,
    ),
    "files.head": RouteDoc(
        "A file's size and date",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _RANGE),
        responses={200: "headers only", 206: "headers of the range"},
        errors=(409, 416),
        headers={200: _FILE_HEADERS, 206: _RANGE_HEADERS, 416: _UNSATISFIABLE_HEADERS},
        at_center=True,
    ),
    "files.upload": RouteDoc(
        "Upload a file (streamed; resume with offset)",
        path_params={"center": _CENTER},
        params=(
            _PATH_REQUIRED,
            Param("offset", "integer", "write from this byte", minimum=0, maximum=1 << 62),
            _flag("overwrite", "replace an existing file (default true)"),
            _SHA256,
        ),
        body="binary",
        responses={200: "written over an existing file", 201: "created"},
        errors=(409, 422),
        at_center=True,
    ),
    "files.mkdir": RouteDoc(
        "Make a directory",
        path_params={"center": _CENTER},
        body=MkdirRequest,
        responses={200: "it existed", 201: "created"},
        errors=(409,),
        at_center=True,
    ),
    "files.rename": RouteDoc(
        "Rename or move a path",
        path_params={"center": _CENTER},
        body=RenameRequest,
        errors=(409,),
        at_center=True,
    ),
    "files.remove": RouteDoc(
        "Remove a path",
        path_params={"center": _CENTER},
        params=(_PATH_REQUIRED, _flag("recursive", "remove a directory's contents")),
        responses={204: "removed"},
        errors=(409,),
        at_center=True,
    ),
    "transfers.create": RouteDoc(
        "Start a transfer between centers",
        body=TransferRequest,
        responses={202: "queued"},
        errors=(404, 409),
        at_center=True,
    ),
    "transfers.list": RouteDoc("The caller's transfers", params=(_LIMIT,)),
    "transfers.get": RouteDoc("One transfer", path_params={"id": "the transfer's id"}),
    "transfers.cancel": RouteDoc("Cancel a transfer", path_params={"id": "the transfer's id"}),
    "evaluations.start": RouteDoc(
        "Start an access evaluation of a center",
        path_params={"center": _CENTER},
        responses={202: "started"},
        errors=(409,),
    ),
    "evaluations.list": RouteDoc(
        "A center's evaluations", path_params={"center": _CENTER}, params=(_LIMIT,)
    ),
    "evaluations.get": RouteDoc(
        "One evaluation and its report",
        path_params={"center": _CENTER, "eid": "the evaluation's id"},
        params=(Param("format", description="json or markdown", enum=("json", "markdown")),),
    ),
    "metrics": RouteDoc(
        "Prometheus metrics",
        responses={200: "the exposition format"},
        media={200: "text/plain"},
    ),
    "dashboard.page": RouteDoc(
        "The operators' dashboard page", responses={200: "the page"}, media={200: "text/html"}
    ),
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


#: Path parameters whose form the server checks before looking anything up.
_PATH_PARAM_SCHEMAS: dict[str, dict[str, Any]] = {
    "index": {"type": "string", "pattern": "^[0-9]{1,9}$"},
    "stream": {"type": "string", "enum": ["stdout", "stderr"]},
    "file": {"type": "string", "enum": sorted(ASSETS)},
}
#: One server-sent event of a job stream: `data` is the job record (one line of JSON).
_SSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"const": "job"},
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
        answer = _error_response(ERROR_STATUSES[status])
        if status in doc.headers:
            answer["headers"] = _headers(doc.headers[status])
        if status == 429:
            answer["headers"] = _headers({"Retry-After": (True, _INT_HEADER)})
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
