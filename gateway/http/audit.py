"""The audit middleware: one line in the audit log (gateway/identity/audit.py) per
mutating request (POST, PUT, PATCH, DELETE), with its actor, action, target and
outcome. Headers, bodies, query strings and tokens are never recorded.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

from aiohttp import web

from gateway.http.errors import INTERNAL, status_of
from gateway.identity.audit import AuditError, AuditTrail

log = logging.getLogger("hpcfed.audit")


#: A handler sets ``request[AUDIT_TARGET] = {"job": id}`` to name what it acted on
#: beyond the URL (e.g. the id of a job it just created).
AUDIT_TARGET: Final = web.RequestKey("audit_target", dict)


#: Only these change anything; reads are not audited.
MUTATING_METHODS: Final = frozenset({"POST", "PUT", "PATCH", "DELETE"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


Middleware = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]


ActorOf = Callable[[web.Request], tuple[str | None, Iterable[str]]]


def audit_middleware(audit: AuditTrail, actor: ActorOf) -> Middleware:
    """Record every POST, PUT, PATCH and DELETE with its outcome.

    Meant to be the outermost middleware, so that it sees the answer the client
    gets (after errors are mapped to JSON). ``actor(request)`` is called after
    the handler, when inner middlewares have identified the caller.

    If the line cannot be written the action has already happened; the client
    still gets its answer and the failure is in the gateway log (the trail logs it).
    """

    def write(request: web.Request, status: int | None, outcome: str, error: str | None) -> None:
        try:
            user, roles = actor(request)
        except Exception:
            # The answer is already decided; a broken lookup must not change it.
            log.exception("cannot tell who made %s %s", request.method, request.path)
            user, roles = None, ()
        target = {k: str(v) for k, v in request.match_info.items()}
        target.update({k: str(v) for k, v in (request.get(AUDIT_TARGET) or {}).items()})
        try:
            audit.record(
                action=_action(request),
                actor=user,
                roles=roles,
                target=target or None,
                outcome=outcome,
                status=status,
                error=error,
                source=request.remote or "unknown",
            )
        except AuditError:
            pass  # already logged by record()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method not in MUTATING_METHODS:
            return await handler(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            write(request, exc.status, outcome_of(exc.status), _error_code(exc))
            raise
        except Exception:
            write(request, status_of(INTERNAL), "failed", INTERNAL.code)
            raise
        except BaseException:
            # Cancelled (gateway shutdown): what was done is unknown, and no
            # status was sent; record that much rather than nothing.
            write(request, None, "failed", "cancelled")
            raise
        write(request, response.status, outcome_of(response.status), _error_code(response))
        return response

    return middleware


def outcome_of(status: int) -> str:
    """The audit outcome of an HTTP status."""
    if status < 400:
        return "ok"
    if status == 401:
        return "unauthenticated"
    if status == 403:
        return "denied"
    if status < 500:
        return "refused"  # 429, 404, 409, 413, 422, ...: the request was not carried out
    return "failed"


def _action(request: web.Request) -> str:
    route = request.match_info.route
    if route.name:
        return route.name
    # The route's pattern (not the concrete path) keeps ids in the target, where
    # they belong; an unmatched request has only its path.
    resource = route.resource
    path = resource.canonical if resource is not None else request.path
    return f"{request.method} {path}"


def _error_code(response: web.StreamResponse) -> str | None:
    """The ``error.code`` of a JSON error answer, without touching streamed bodies."""
    if response.status < 400 or not isinstance(response, web.Response):
        return None
    body = response.body
    if not isinstance(body, bytes | bytearray):
        return None
    content_type = response.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        return None
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    error = parsed.get("error") if isinstance(parsed, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) else None
