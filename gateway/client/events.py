"""Job events for the Python client: follow the gateway's Server-Sent Event streams."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from gateway.client.errors import ClientError, raise_for

#: A dropped stream is reopened for this long before the client gives up.
RECONNECT_FOR = 30.0
#: Answers of a load balancer (or a replica) while no replica can serve: a stream
#: refused so is reopened like a dropped one, until RECONNECT_FOR has passed.
_PASSING = frozenset({502, 503, 504})
_MAX_BACKOFF = 5.0


@dataclass
class SSEParser:
    """Incremental Server-Sent Events parsing: feed bytes, get (id, event, data) back."""

    _buffer: bytes = b""
    _id: str | None = None
    _event: str = "message"
    _data: list[str] = field(default_factory=list)

    def feed(self, chunk: bytes) -> list[tuple[str | None, str, str]]:
        self._buffer += chunk
        events: list[tuple[str | None, str, str]] = []
        while True:
            line, sep, rest = self._buffer.partition(b"\n")
            if not sep:
                return events
            self._buffer = rest
            text = line.decode("utf-8").rstrip("\r")
            if not text:
                if self._data:
                    events.append((self._id, self._event, "\n".join(self._data)))
                self._event, self._data = "message", []
                continue
            if text.startswith(":"):
                continue  # a comment: keepalive
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id":
                self._id = value


class EventsClientMixin:
    """`events` and `wait` of HpcfedClient; needs its `session` and `url`."""

    url: str

    if TYPE_CHECKING:

        @property
        def session(self) -> aiohttp.ClientSession: ...

    async def _event_stream(
        self, path: str, last_event_id: str | None = None
    ) -> AsyncIterator[tuple[str | None, dict[str, Any]]]:
        """One connection's (event id, job record)s, after `last_event_id` when given
        (the gateway replays what came after it, from any replica); ends when the
        gateway ends the stream."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        async with self.session.get(self.url + path, headers=headers) as resp:
            if resp.status >= 400:
                await raise_for(resp)
            parser = SSEParser()
            async for chunk in resp.content.iter_any():
                for event_id, event, data in parser.feed(chunk):
                    if event == "job":
                        yield event_id, json.loads(data)

    async def events(
        self, job_id: str | None = None, *, retry_interval: float = 0.5
    ) -> AsyncIterator[dict[str, Any]]:
        """Job records as they change: one job's (first its current record, ending
        after a terminal one), or, without `job_id`, every job the caller may see
        (until the caller stops). A dropped stream is reopened, through whichever
        replica answers, with the id of the last event seen: what came meanwhile is
        replayed (each job changed since, at its newest record)."""
        path = f"/v1/jobs/{job_id}/events" if job_id else "/v1/events"
        last: dict[str, Any] | None = None
        last_id: str | None = None
        failing_since: float | None = None
        backoff = retry_interval
        while True:
            try:
                async for event_id, job in self._event_stream(path, last_id):
                    failing_since, backoff = None, retry_interval
                    last_id = event_id or last_id
                    if job_id is not None and job == last:
                        continue  # the current record again, after a reconnect
                    last = job
                    yield job
                    if job_id is not None and job["terminal"]:
                        return
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, ClientError) as exc:
                if isinstance(exc, ClientError) and exc.status not in _PASSING:
                    raise
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since >= RECONNECT_FOR:
                    message = f"cannot reach the gateway at {self.url}: {exc}"
                    raise ClientError(0, "unreachable", message) from None
            # The stream ended early (gateway restart, overflow) or dropped: reopen it.
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    async def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - callers think in deadlines
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Follow the job's events until it reaches a terminal state; return that record.
        `interval` is the pause before reopening a dropped stream."""
        async with asyncio.timeout(timeout):
            async for job in self.events(job_id, retry_interval=interval):
                if job["terminal"]:
                    return job
        raise ClientError(0, "stream_ended", f"job {job_id}: the event stream ended early")
