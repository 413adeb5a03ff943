"""Job events as Server-Sent Events: one job's changes, or all of a user's.

Each event is ``id: <n>``, ``event: job`` and ``data: <the job's public JSON>``,
`n` the number of the change in the job feed (gateway/jobs/events.py, JobFeed).
The job stream first sends the current record and ends after a terminal one;
the user stream stays open. A ``: keepalive`` comment goes out when nothing
else has for a while. Streams end when the client goes or the app shuts down.

A request with ``Last-Event-ID`` (or the query parameter ``last_event_id``, for
clients that cannot set headers; the header wins) first gets what it missed after
that event, each job's newest record once, then the live events. When the feed
can no longer tell (the id is older than it keeps), the job stream sends the
current record as without the header, and the user stream an ``event: resync``
that tells the client to re-read its jobs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field

from aiohttp import web

from gateway.errors import DomainError
from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.routes.keys import EVENTS, SERVICE
from gateway.jobs.events import JobEvent, Subscription
from gateway.jobs.feeds import JobFeed, ReplayUnavailable
from gateway.jobs.records import JobRecord

log = logging.getLogger("hpcfed.events")

#: The feed the streams replay from (set where the app starts its stores).
FEED = web.AppKey("feed", JobFeed)
LAST_EVENT_ID = "Last-Event-ID"
LAST_EVENT_ID_QUERY = "last_event_id"
#: What an event id may be: a decimal number of the feed, at most 2**63 - 1.
_EVENT_ID = re.compile(r"^[0-9]{1,19}$")
_MAX_EVENT_ID = (1 << 63) - 1

#: Seconds of silence after which a keepalive comment is sent.
KEEPALIVE = 15.0
#: How often a quiet stream checks that its client is still connected.
_LIVENESS = 1.0
_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # a proxy must not hold events back
}


def sse_event(seq: int, record: JobRecord) -> bytes:
    data = json.dumps(record.public(), separators=(",", ":"))
    return f"id: {seq}\nevent: job\ndata: {data}\n\n".encode()


def sse_resync(seq: int, reason: str) -> bytes:
    data = json.dumps({"reason": reason}, separators=(",", ":"))
    return f"id: {seq}\nevent: resync\ndata: {data}\n\n".encode()


def last_event_id(request: web.Request) -> int | None:
    """The id of the last event the client saw: the header, else the query parameter;
    None without either (or with an empty one, as a browser that saw no id sends)."""
    for name, raw in (
        (LAST_EVENT_ID, request.headers.get(LAST_EVENT_ID)),
        (LAST_EVENT_ID_QUERY, request.query.get(LAST_EVENT_ID_QUERY)),
    ):
        if raw is None or not raw.strip():
            continue
        value = raw.strip()
        if not _EVENT_ID.match(value) or int(value) > _MAX_EVENT_ID:
            raise DomainError(
                "invalid_request",
                f"{name}: must be the id of an event of this stream (a number), got {value[:40]!r}",
                field=name,
            )
        return int(value)
    return None


@dataclass
class Resume:
    """What a resumed stream replays first, and the live events it must then skip."""

    after: int
    missed: list[JobEvent] = field(default_factory=list)
    expired: str | None = None  # why the feed could not tell what was missed

    def seen(self, event: JobEvent) -> bool:
        """Whether the client has this event already (seen, or replayed newer)."""
        if event.seq <= self.after:
            return True
        return any(m.record.id == event.record.id and m.seq >= event.seq for m in self.missed)


async def _resume(
    request: web.Request, after: int | None, *, owner: str | None, job_id: str | None
) -> Resume | None:
    if after is None:
        return None
    try:
        missed = await request.app[FEED].since(after, owner=owner, job_id=job_id)
    except ReplayUnavailable as exc:
        log.info("events: no replay after %d (%s): resync", after, exc.reason)
        return Resume(after, expired=exc.reason)
    return Resume(after, missed)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _is_news(record: JobRecord, last: JobRecord | None) -> bool:
    """Whether `record` tells a watcher who last saw `last` something new."""
    if last is None:
        return True
    if record.updated_at < last.updated_at:
        return False  # published before the read that was already sent
    return record.public() != last.public()


async def _stream(
    request: web.Request,
    sub: Subscription,
    first: list[bytes],
    *,
    until_terminal: bool,
    last: JobRecord | None = None,
    resume: Resume | None = None,
) -> web.StreamResponse:
    """Send `first` (already rendered events), then the subscription's; `last` is
    the record the client holds, `resume` what it has seen."""
    response = web.StreamResponse(headers=_HEADERS)
    await response.prepare(request)
    try:
        for chunk in first:
            await response.write(chunk)
        quiet_since = time.monotonic()
        while not (until_terminal and last is not None and last.state.is_terminal):
            event = await sub.next(timeout=_LIVENESS)
            if event is None:
                if sub.closed or _gone(request):
                    break  # shutdown, overflow, or the client left
                if time.monotonic() - quiet_since >= KEEPALIVE:
                    await response.write(b": keepalive\n\n")
                    quiet_since = time.monotonic()
                continue
            if resume is not None and resume.seen(event):
                continue
            if until_terminal and not _is_news(event.record, last):
                continue
            await response.write(sse_event(event.seq, event.record))
            last = event.record
            quiet_since = time.monotonic()
        await response.write_eof()
    except ConnectionResetError:
        pass  # the client went; nothing is left to tell it
    return response


async def job_events(request: web.Request) -> web.StreamResponse:
    owner = request[PRINCIPAL].owner_filter("jobs.read")
    job_id = request.match_info["id"]
    after = last_event_id(request)
    bus = request.app[EVENTS]
    # Subscribe before reading, so no change between the read and the stream is missed.
    with bus.subscribe(job_id=job_id) as sub:
        seq = bus.last_seq
        record = await request.app[SERVICE].get(owner, job_id)  # 404 for someone else's
        resume = await _resume(request, after, owner=None, job_id=job_id)
        if resume is None or resume.expired is not None:
            return await _stream(request, sub, [sse_event(seq, record)], until_terminal=True)
        # What the client missed of the job; nothing when it has the newest record (a
        # job that has ended and whose end it saw: the stream ends at once).
        first = [sse_event(e.seq, e.record) for e in resume.missed]
        # The record was read before the replay, so a change in it is among the missed.
        last = resume.missed[-1].record if resume.missed else record
        if not resume.missed and not record.state.is_terminal:
            last = None  # the next change is news, whatever it holds
        return await _stream(request, sub, first, until_terminal=True, last=last, resume=resume)


async def user_events(request: web.Request) -> web.StreamResponse:
    owner = request[PRINCIPAL].owner_filter("jobs.read")  # None: every owner's jobs
    after = last_event_id(request)
    bus = request.app[EVENTS]
    with bus.subscribe(owner=owner) as sub:
        seq = bus.last_seq
        resume = await _resume(request, after, owner=owner, job_id=None)
        first: list[bytes] = []
        if resume is not None and resume.expired is not None:
            first, resume = [sse_resync(seq, resume.expired)], None
        elif resume is not None:
            first = [sse_event(e.seq, e.record) for e in resume.missed]
        return await _stream(request, sub, first, until_terminal=False, resume=resume)


async def _close_streams(app: web.Application) -> None:
    app[EVENTS].close()  # open streams end, so shutdown does not wait for them


def setup_routes(app: web.Application) -> None:
    add_route(
        app, "GET", "/v1/jobs/{id}/events", job_events, name="jobs.events", permission="jobs.read"
    )
    add_route(app, "GET", "/v1/events", user_events, name="events.list", permission="jobs.read")
    app.on_shutdown.append(_close_streams)
