"""How a route is described for the OpenAPI document: its parameters (`Param`), its
answers and body (`RouteDoc`), the error statuses an operation may list, and the one
error shape every error answer has."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from gateway.http.params import INTEGER_PATTERN

ParamType = Literal["string", "integer", "boolean"]

#: A header whose value is a non-negative integer.
INT_HEADER: dict[str, Any] = {"type": "string", "pattern": INTEGER_PATTERN}


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
    #: The schema of its error answers (GA4GH TES routes answer in their own shape).
    error_schema: str = "Error"


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

#: The one error shape (gateway/http/errors.py); details such as `center` vary by code.
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


#: GA4GH TES routes' error shape (gateway/http/tes.py).
TES_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["msg", "status_code"],
    "properties": {
        "msg": {"type": "string"},
        "status_code": {"type": "integer"},
        "code": {"type": "string"},
        "field": {"type": "string", "description": "the parameter or field at fault"},
    },
    "additionalProperties": True,
}
