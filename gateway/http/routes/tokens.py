"""Tokens: issuing them (admins) and the public keys that verify them."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import Unprocessable
from gateway.fields import CENTER_ID_PATTERN, USER_PATTERN, Role
from gateway.http.audit import AUDIT_TARGET
from gateway.http.auth import add_route
from gateway.http.params import body_as
from gateway.http.routes.keys import ISSUER, KEYRING
from gateway.units import Seconds

#: The center-admin role needs at least one center (TokenIssuer.issue).
_CENTER_ADMIN_NEEDS_CENTERS = {
    "if": {"required": ["roles"], "properties": {"roles": {"contains": {"const": "center-admin"}}}},
    "then": {"required": ["centers"], "properties": {"centers": {"minItems": 1}}},
}


class TokenRequest(BaseModel):
    """The schema carries the rules TokenIssuer.issue applies (a 422 naming the field)."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        json_schema_extra=_CENTER_ADMIN_NEEDS_CENTERS,
    )

    user: str = Field(json_schema_extra={"pattern": USER_PATTERN})
    roles: list[Role] = Field(min_length=1)
    centers: list[Annotated[str, Field(json_schema_extra={"pattern": CENTER_ID_PATTERN})]] = Field(
        default_factory=list
    )
    ttl: Seconds | None = Field(
        None, description="seconds, or a duration such as '8h'; at most auth.max_ttl"
    )


async def issue_token(request: web.Request) -> web.Response:
    wanted = await body_as(request, TokenRequest)
    try:
        issued = request.app[ISSUER].issue(wanted.user, wanted.roles, wanted.centers, wanted.ttl)
    except ValueError as exc:
        field = str(exc).split(":", 1)[0]
        raise Unprocessable("invalid_request", str(exc), field=field) from None
    request[AUDIT_TARGET] = {"user": issued.user, "token_id": issued.token_id}
    return web.json_response(
        issued.public(),
        status=201,
        headers={"Cache-Control": "no-store"},
    )


async def jwks(request: web.Request) -> web.Response:
    return web.json_response(request.app[KEYRING].jwks())


def setup_routes(app: web.Application) -> None:
    add_route(
        app, "POST", "/v1/tokens", issue_token, name="tokens.issue", permission="tokens.issue"
    )
    add_route(app, "GET", "/v1/auth/jwks.json", jwks, name="auth.jwks", permission=None)
