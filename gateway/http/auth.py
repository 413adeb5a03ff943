"""Authentication and permission at the HTTP edge.

Every route is registered through `add_route` with the one permission it needs
(None: public). One middleware checks the bearer token and that permission before
any handler runs; a route added any other way is refused (fail closed). The
principal it finds (gateway/identity/permissions.py) is put on the request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from gateway.errors import DomainError
from gateway.http.errors import renderer_of
from gateway.identity.permissions import PERMISSIONS, Principal
from gateway.identity.tokens import TokenError
from gateway.identity.verifier import TokenVerifier

log = logging.getLogger("hpcfed.auth")


PRINCIPAL = web.RequestKey("principal", Principal)


#: Route name -> the permission it needs; None marks a public route.
ROUTE_PERMISSIONS = web.AppKey("route_permissions", dict[str, str | None])


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    *,
    name: str,
    permission: str | None,
) -> None:
    """Register a route with the permission it needs (None: public)."""
    if permission is not None and permission not in PERMISSIONS:
        raise ValueError(f"route {name}: unknown permission {permission!r}")
    table = app.setdefault(ROUTE_PERMISSIONS, {})
    if name in table:
        raise ValueError(f"route {name} is registered twice")
    table[name] = permission
    app.router.add_route(method, path, handler, name=name)


def _unauthenticated(request: web.Request, reason: str) -> web.StreamResponse:
    response = renderer_of(request)(
        DomainError("unauthenticated", f"Authorization: {reason}", "Authorization")
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="hpcfed"'
    return response


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def auth_middleware(verifier: TokenVerifier) -> Callable[..., Awaitable[web.StreamResponse]]:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        table = request.app[ROUTE_PERMISSIONS]
        name = request.match_info.route.name
        if name is not None and name in table and table[name] is None:
            return await handler(request)  # public
        token = _bearer(request)
        if token is None:
            return _unauthenticated(request, "a 'Bearer <token>' header is required")
        try:
            principal = Principal.from_token(await verifier.verify(token))
        except TokenError as exc:
            return _unauthenticated(request, str(exc))
        request[PRINCIPAL] = principal
        if name is None:
            return await handler(request)  # no such route: the router's 404/405
        permission = table.get(name)
        if permission is None:
            log.error("route %s was added without a permission; refusing it", name)
            return renderer_of(request)(
                DomainError("forbidden", "this route is not open to anyone")
            )
        center = request.match_info.get("center")
        if not principal.may(permission, center):
            roles = ", ".join(sorted(principal.roles)) or "none"
            where = f" at center {center}" if center else ""
            return renderer_of(request)(
                DomainError(
                    "forbidden",
                    f"user {principal.user} (roles: {roles}) lacks permission {permission}{where}",
                    permission=permission,
                )
            )
        return await handler(request)

    return middleware


def principal_of(request: web.Request) -> tuple[str | None, Iterable[str]]:
    """Who made a request, for the audit log (None before authentication)."""
    principal = request.get(PRINCIPAL)
    return (principal.user, principal.roles) if principal else (None, ())


def rate_limit_key(request: web.Request) -> str | None:
    principal = request.get(PRINCIPAL)
    return principal.user if principal else None
