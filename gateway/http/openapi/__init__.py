"""The OpenAPI 3.1 document of the HTTP API, built from one table of route descriptions.

`ROUTES` (routes.py) describes every route by the name it is registered under
(`add_route`), in the terms of route_doc.py; the document (document.py) walks the
app's router, so a route added without an entry shows up in `undocumented_routes`
(a test fails on it) and as "undocumented" in the document. Request body schemas
come from the pydantic models themselves.
"""

from gateway.http.openapi.document import (
    RegisteredRoute,
    build_openapi,
    error_statuses,
    registered_routes,
    undocumented_routes,
)
from gateway.http.openapi.route_doc import ERROR_SCHEMA, ERROR_STATUSES, Param, RouteDoc
from gateway.http.openapi.routes import ROUTES

__all__ = [
    "ERROR_SCHEMA",
    "ERROR_STATUSES",
    "ROUTES",
    "Param",
    "RegisteredRoute",
    "RouteDoc",
    "build_openapi",
    "error_statuses",
    "registered_routes",
    "undocumented_routes",
]
