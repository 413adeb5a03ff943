"""The HTTP answer to every failure: the one table of codes to statuses.

``{"error": {"code": "...", "message": "...", ...details}}`` with the code's
status. Domain errors, adapter errors, path refusals and pydantic's
`ValidationError` all become a `DomainError` first (gateway/errors.py), then an
answer here; so does a store out of reach (`StoreUnavailable`: 503
`store_unavailable` with Retry-After), while any other StoreError is a fault of
ours (500 `internal_error`). A sub-app with its own error shape (e.g. /ga4gh/tes/v1) reuses
`status_of` and builds its middleware with `error_middleware_for(renderer)`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.errors import AdapterError, InvalidCall
from adapters.files.paths import PathRefused
from gateway.errors import (
    DomainError,
    Unprocessable,
    adapter_error,
    path_error,
    validation_error,
)
from gateway.store.contract import StoreUnavailable

log = logging.getLogger("hpcfed.api")

#: Every code the gateway answers with, and its HTTP status. The only place
#: statuses of errors live.
STATUS: dict[str, int] = {
    # the request's form
    "bad_request": 400,
    "invalid_json": 400,
    "invalid_request": 400,
    "path_refused": 400,
    "header_too_large": 431,
    "body_too_large": 413,
    "spec_too_large": 413,
    "range_not_satisfiable": 416,
    "method_not_allowed": 405,
    "http_error": 400,
    # who asks
    "unauthenticated": 401,
    "forbidden": 403,
    "no_identity_at_center": 403,
    "path_outside_roots": 403,
    "permission_denied": 403,
    "rate_limited": 429,
    # what is asked for
    "not_found": 404,
    "unknown_center": 404,
    "unknown_app": 404,
    "file_not_found": 404,
    "not_supported": 501,
    # what the request says
    "checksum_mismatch": 422,
    "dependency_never_met": 422,
    "rejected_by_center": 422,
    "staging_failed": 422,
    "unsatisfiable": 422,
    "unsupported_image": 422,
    # the state of things
    "evaluation_running": 409,
    "canaries_running": 409,
    "app_defined_in_file": 409,
    "job_submitted": 409,
    "no_service_login": 409,
    "not_an_upload": 409,
    "file_error": 409,
    "file_exists": 409,
    "path_conflict": 409,
    "not_a_directory": 409,
    "is_a_directory": 409,
    "directory_not_empty": 409,
    "offset_mismatch": 409,
    # the centers
    "center_error": 502,
    "center_host_key_rejected": 502,
    "center_authentication_failed": 502,
    "center_unavailable": 503,
    "no_center_available": 503,
    # ours: the store out of reach for a while (a plain StoreError is a fault of ours)
    "store_unavailable": 503,
    "internal_error": 500,
}

#: An `Unprocessable` error: the request was well formed, its content is refused.
UNPROCESSABLE = 422

#: The code of a fault of ours; its message sends the reader to the log.
INTERNAL = DomainError("internal_error", "internal error; see the gateway log")

#: Seconds a client is told to wait (Retry-After) when the store is out of reach:
#: about as long as the store's pool waits for a connection before giving up.
STORE_RETRY_AFTER = 5
#: Codes whose answers carry Retry-After, and its value in seconds.
RETRY_AFTER: dict[str, int] = {"store_unavailable": STORE_RETRY_AFTER}


def store_unavailable() -> DomainError:
    """The answer while the store cannot be reached. Its message is fixed: the store's
    own (server address, driver text) stays in the log."""
    return DomainError(
        "store_unavailable", "the gateway's store is unavailable for now; try again shortly"
    )


def status_of(error: DomainError) -> int:
    """The HTTP status of a domain error: its code's, or 422 when `Unprocessable`."""
    if isinstance(error, _Routed):
        return error.status
    if isinstance(error, Unprocessable):
        return UNPROCESSABLE
    return STATUS[error.code]


def error_body(error: DomainError) -> dict[str, Any]:
    """The API's one error shape."""
    return {"error": {"code": error.code, "message": error.message, **error.details}}


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    """An answer built by a middleware before any handler runs; its status is its
    code's in `STATUS` (tests/unit/test_domain_errors.py holds them to it)."""
    body = {"error": {"code": code, "message": message, **details}}
    return web.json_response(body, status=status)


def domain_response(error: DomainError) -> web.Response:
    return web.json_response(error_body(error), status=status_of(error))


def as_domain_error(exc: BaseException) -> DomainError | None:
    """The domain error an exception stands for; None when it is no known failure."""
    if isinstance(exc, DomainError):
        return exc
    if isinstance(exc, PathRefused):
        return path_error(exc)
    if isinstance(exc, AdapterError) and not isinstance(exc, InvalidCall):
        return adapter_error(exc)  # an InvalidCall is a fault of ours, answered as one
    if isinstance(exc, ValidationError):
        return validation_error(exc)
    if isinstance(exc, json.JSONDecodeError):
        return DomainError("invalid_json", f"(body): not valid JSON: {exc.msg}")
    if isinstance(exc, StoreUnavailable):
        return store_unavailable()
    return None  # a plain StoreError among them: a fault of ours, answered as one


#: aiohttp's own refusals that have a code of the table; any other is `http_error`.
_ROUTER_CODES = {
    STATUS[code]: code for code in ("not_found", "method_not_allowed", "body_too_large")
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Turns a domain error into a sub-app's own answer.
Renderer = Callable[[DomainError], web.StreamResponse]
Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


def error_middleware_for(render: Renderer) -> Middleware:
    """A middleware answering every failure through `render`: domain, adapter and
    validation errors, the router's own 404/405/413, and faults of ours (logged,
    answered as `internal_error`)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = _ROUTER_CODES.get(exc.status, "http_error")
            response = render(_Routed(code, exc.reason, exc.status))
            if isinstance(exc, web.HTTPMethodNotAllowed):
                # RFC 9110 15.5.6: a 405 lists the methods the resource has.
                response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
            return response
        except Exception as exc:
            error = as_domain_error(exc)
            if error is None:
                log.exception("unhandled error on %s %s", request.method, request.path)
                error = INTERNAL
            elif isinstance(exc, StoreUnavailable):
                log.warning("%s %s: %s", request.method, request.path, exc)
            response = render(error)
            retry_after = RETRY_AFTER.get(error.code)
            if retry_after is not None and not response.prepared:
                response.headers["Retry-After"] = str(retry_after)
            return response

    return middleware


#: A sub-app's renderer (its own error shape), for the parent's middlewares that answer
#: before the sub-app's own error middleware runs (authentication, permissions).
ERROR_RENDERER = web.AppKey("error_renderer", Callable[[DomainError], web.StreamResponse])


def renderer_of(request: web.Request) -> Renderer:
    """How the app a request was routed to answers errors."""
    for app in reversed(request.match_info.apps):
        render = app.get(ERROR_RENDERER)
        if render is not None:
            return render
    return domain_response


class _Routed(DomainError):
    """A refusal of aiohttp's router or body reader, its status given by aiohttp."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(code, message)
        self.status = status


#: The gateway's own API: the error shape of `error_body`.
error_middleware = error_middleware_for(domain_response)
