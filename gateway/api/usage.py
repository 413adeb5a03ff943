"""Usage and billing: core-hours, GPU-hours and cost of finished jobs."""

from __future__ import annotations

from datetime import UTC, datetime

from aiohttp import web

from gateway.api.keys import CENTERS, STORE
from gateway.api.params import bool_query
from gateway.auth import PRINCIPAL, add_route
from gateway.errors import ApiError
from gateway.usage import GROUPS, job_line, summarize


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name, "").strip()
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(
            400,
            "invalid_request",
            f"{name}: must be an ISO 8601 date or time such as 2026-12-01 or "
            f"2026-12-01T08:00:00Z, got {raw!r}",
            field=name,
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _group_by(request: web.Request) -> list[str]:
    raw = request.query.get("group_by", "user,center")
    groups = [g.strip() for g in raw.split(",") if g.strip()]
    for group in groups:
        if group not in GROUPS:
            raise ApiError(
                400,
                "invalid_request",
                f"group_by: {group!r} is not one of {', '.join(GROUPS)}",
                field="group_by",
            )
    if len(set(groups)) != len(groups):
        raise ApiError(400, "invalid_request", "group_by: names a group twice", field="group_by")
    return groups


async def get_usage(request: web.Request) -> web.Response:
    """Finished jobs that ended in [since, until): a researcher sees only their own."""
    principal = request[PRINCIPAL]
    own = principal.owner_filter("usage.read")
    user = request.query.get("user") or None
    if own is not None and user not in (None, own):
        raise ApiError(
            403,
            "forbidden",
            f"user: {principal.user} may see only their own usage",
            field="user",
            permission="usage.read",
        )
    user = own or user
    center = request.query.get("center") or None
    if center is not None:
        center = request.app[CENTERS].get(center).id
    since, until = _time(request, "since"), _time(request, "until")
    if since and until and since >= until:
        raise ApiError(400, "invalid_request", "until: must be later than since", field="until")
    group_by = _group_by(request)
    records = await request.app[STORE].finished(owner=user, center=center, since=since, until=until)
    billed = [r for r in records if r.usage is not None]
    body: dict[str, object] = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "user": user,
        "center": center,
        "group_by": group_by,
        "totals": summarize(billed, group_by),
    }
    if bool_query(request, "jobs"):
        body["jobs"] = [job_line(r) for r in billed]
    return web.json_response(body)


def setup_routes(app: web.Application) -> None:
    add_route(app, "GET", "/v1/usage", get_usage, name="usage.read", permission="usage.read")
