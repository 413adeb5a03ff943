"""Job events as Server-Sent Events: one job's changes, or all of a user's.

Each event is ``id: <n>``, ``event: job`` and ``data: <the job's public JSON>``.
The job stream first sends the current record and ends after a terminal one;
the user stream stays open. A ``: keepalive`` comment goes out when nothing
else has for a while. Streams end when the client goes or the app shuts down.
"""

from __future__ import annotations

import json
import time

from aiohttp import web

from gateway.http.auth import PRINCIPAL, add_route
from gateway.http.routes.keys import EVENTS, SERVICE
from gateway.jobs.events import Subscription
from gateway.jobs.records import JobRecord

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
    first: tuple[int, JobRecord] | None,
    *,
    until_terminal: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(headers=_HEADERS)
    await response.prepare(request)
    last: JobRecord | None = None
    try:
        if first is not None:
            await response.write(sse_event(*first))
            last = first[1]
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
    bus = request.app[EVENTS]
    # Subscribe before reading, so no change between the read and the stream is missed.
    with bus.subscribe(job_id=job_id) as sub:
        seq = bus.last_seq
        record = await request.app[SERVICE].get(owner, job_id)  # 404 for someone else's
        return await _stream(request, sub, (seq, record), until_terminal=True)


async def user_events(request: web.Request) -> web.StreamResponse:
    owner = request[PRINCIPAL].owner_filter("jobs.read")  # None: every owner's jobs
    with request.app[EVENTS].subscribe(owner=owner) as sub:
        return await _stream(request, sub, None, until_terminal=False)


async def _close_streams(app: web.Application) -> None:
    app[EVENTS].close()  # open streams end, so shutdown does not wait for them


def setup_routes(app: web.Application) -> None:
    add_route(
        app, "GET", "/v1/jobs/{id}/events", job_events, name="jobs.events", permission="jobs.read"
    )
    add_route(app, "GET", "/v1/events", user_events, name="events.list", permission="jobs.read")
    app.on_shutdown.append(_close_streams)
