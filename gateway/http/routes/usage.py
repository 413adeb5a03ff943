"""Usage and billing: core-hours, GPU-hours and cost of finished jobs."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime

from aiohttp import web

from gateway.errors import DomainError
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.params import bool_query
from gateway.http.routes.keys import CENTERS, STORE
from gateway.jobs.usage import GROUPS, job_line, summarize

_YEAR = r"(000[1-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-9][0-9]{3})"
#: Month and day; February has 28 days here (a leap day is also taken, undocumented).
_MONTH_DAY = (
    r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)"
)
_CLOCK = r"([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?"
_OFFSET = r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])"
#: `since` and `until` of GET /v1/usage: a date, or a date and time with an optional
#: offset (UTC without one); empty is no bound.
TIME_PATTERN = rf"^({_YEAR}-{_MONTH_DAY}(T{_CLOCK}{_OFFSET}?)?)?$"
_TIME_RE = re.compile(TIME_PATTERN.removesuffix("$") + r"\Z")
#: `group_by`: comma-separated groups, each at most once; empty items are skipped.
GROUP_BY_PATTERN = (
    "^[ ,]*("
    + "|".join(
        r" *, *[ ,]*".join(order)
        for n in range(1, len(GROUPS) + 1)
        for order in itertools.permutations(GROUPS, n)
    )
    + ")?[ ,]*$"
)
#: The earliest and latest instants a time may name, so that no offset overflows.
_FIRST = datetime(1, 1, 2, tzinfo=UTC)
_LAST = datetime(9999, 12, 30, tzinfo=UTC)


def _time(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name, "")
    if not raw:
        return None
    try:
        if not _TIME_RE.match(raw):
            raise ValueError(raw)
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise DomainError(
            "invalid_request",
            f"{name}: must be an ISO 8601 date or time such as 2026-12-01 or "
            f"2026-12-01T08:00:00Z, got {raw!r}",
            field=name,
        ) from None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    return min(max(value, _FIRST), _LAST).astimezone(UTC)


def _group_by(request: web.Request) -> list[str]:
    raw = request.query.get("group_by", "user,center")
    groups = [g.strip() for g in raw.split(",") if g.strip()]
    for group in groups:
        if group not in GROUPS:
            raise DomainError(
                "invalid_request",
                f"group_by: {group!r} is not one of {', '.join(GROUPS)}",
                field="group_by",
            )
    if len(set(groups)) != len(groups):
        raise DomainError("invalid_request", "group_by: names a group twice", field="group_by")
    return groups


async def get_usage(request: web.Request) -> web.Response:
    """Finished jobs that ended in [since, until): a researcher sees only their own."""
    principal = request[PRINCIPAL]
    own = principal.owner_filter("usage.read")
    user = request.query.get("user") or None
    if own is not None and user not in (None, own):
        raise DomainError(
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
