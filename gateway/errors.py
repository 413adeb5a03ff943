"""The one error shape of the API, and the mapping of every failure to it.

``{"error": {"code": "...", "message": "...", ...details}}`` with the right
status code. Adapter errors are mapped here and nowhere else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from adapters.errors import (
    AdapterError,
    AuthenticationFailed,
    CenterUnavailable,
    CommandFailed,
    FileError,
    HostKeyRejected,
    NativeJobNotFound,
    OffsetMismatch,
    SubmitRejected,
)
from adapters.files.paths import PathRefused

log = logging.getLogger("hpcfed.api")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = {k: v for k, v in details.items() if v is not None}


def error_response(status: int, code: str, message: str, **details: Any) -> web.Response:
    body = {"error": {"code": code, "message": message, **details}}
    return web.json_response(body, status=status)


def field_path(*parts: str | int) -> str:
    """A field's path as errors name it: names joined by dots, list indexes in
    brackets (`inputs[0].destination`, `jobs[3].resources.walltime`)."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "":
            path += f".{part}" if path else part
    return path


def validation_error(error: ValidationError, prefix: str = "") -> ApiError:
    """The first problem names its field; all of them are listed."""
    problems = []
    for item in error.errors():
        field = field_path(prefix, *item["loc"]) or "(body)"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown field"
        problems.append({"field": field, "message": message})
    first = problems[0] if problems else {"field": "(body)", "message": "invalid"}
    return ApiError(
        422,
        "invalid_request",
        f"{first['field']}: {first['message']}",
        field=first["field"],
        problems=problems,
    )


def adapter_error(exc: AdapterError) -> ApiError:
    center = exc.center
    if isinstance(exc, FileError):
        extra = {"size": exc.size} if isinstance(exc, OffsetMismatch) else {}
        return ApiError(exc.status, exc.code, exc.message, center=center, field=exc.field, **extra)
    if isinstance(exc, SubmitRejected):
        # The scheduler's own words when it answered; else the adapter's message,
        # which already names the center (refused before anything was sent).
        said = exc.stderr.strip()
        detail = f"center {center} refused the job: {said}" if said else exc.message
        return ApiError(
            422,
            "rejected_by_center",
            f"{exc.field}: {detail}" if exc.field else detail,
            center=center,
            field=exc.field,
        )
    if isinstance(exc, HostKeyRejected):
        return ApiError(502, "center_host_key_rejected", exc.message, center=center)
    if isinstance(exc, AuthenticationFailed):
        return ApiError(502, "center_authentication_failed", exc.message, center=center)
    if isinstance(exc, CenterUnavailable):
        return ApiError(503, "center_unavailable", exc.message, center=center)
    if isinstance(exc, NativeJobNotFound):
        return ApiError(404, "not_found", exc.message, center=center)
    if isinstance(exc, CommandFailed):
        return ApiError(502, "center_error", exc.message, center=center)
    return ApiError(502, "center_error", exc.message, center=center)


def path_error(exc: PathRefused) -> ApiError:
    if exc.outside:
        return ApiError(403, "path_outside_roots", exc.message, field=exc.field)
    return ApiError(400, "path_refused", exc.message, field=exc.field)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, **exc.details)
    except PathRefused as exc:
        api = path_error(exc)
        return error_response(api.status, api.code, api.message, **api.details)
    except AdapterError as exc:
        api = adapter_error(exc)
        return error_response(api.status, api.code, api.message, **api.details)
    except ValidationError as exc:
        api = validation_error(exc)
        return error_response(api.status, api.code, api.message, **api.details)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        response = error_response(exc.status, code, exc.reason)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            # RFC 9110 15.5.6: a 405 lists the methods the resource has.
            response.headers["Allow"] = ", ".join(sorted(exc.allowed_methods))
        return response
    except json.JSONDecodeError as exc:
        return error_response(400, "invalid_json", f"(body): not valid JSON: {exc.msg}")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal error; see the gateway log")
