"""Job events: an in-process publish/subscribe of job record changes.

Every write of a job record goes through the store, so the store is where
events are born: `PublishingJobStore` wraps the real one and publishes the
new record after each successful `insert` and `update`. The poller, the
service and staging need not know that anyone listens.

Subscribers watch one job, one owner's jobs, or everything (operators). Each
has a queue bounded in events and in bytes (the scripts, arguments and
environments of the records it holds). Writers never wait for a subscriber:
when a queue is full its older events are coalesced to the latest one per job,
so a slow reader loses intermediate records but always gets each job's newest.
A subscriber whose jobs' latest records still do not fit is overflowed and
closed (its stream ends; the client reconnects and re-reads).
Where the changes come from is a `JobFeed` (gateway/jobs/feeds.py).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.jobs.records import JobRecord
from gateway.jobs.store import DuplicateIdempotencyKey, Ended, JobPage, JobQuery, JobStore
from gateway.store.leases import Lease

#: Events a subscriber may have pending before they are coalesced.
DEFAULT_QUEUE_SIZE = 64
#: Bytes of records a subscriber may have pending (their specs' content, and a
#: little for the rest), past which they are coalesced: a slow reader of jobs with
#: large scripts holds at most this much.
DEFAULT_QUEUE_BYTES = 16 << 20
#: What a record weighs besides its spec's content.
_RECORD_BYTES = 2048


@dataclass(frozen=True, slots=True)
class JobEvent:
    seq: int  # increases by one per published change, across all jobs
    record: JobRecord
    size: int = _RECORD_BYTES  # what the record weighs in a queue, in bytes


class Subscription:
    """One watcher's bounded queue of job events; a context manager that unsubscribes."""

    def __init__(
        self,
        bus: EventBus,
        *,
        job_id: str | None,
        owner: str | None,
        maxsize: int,
        maxbytes: int = DEFAULT_QUEUE_BYTES,
    ) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize: must be >= 1, not {maxsize}")
        if maxbytes < 1:
            raise ValueError(f"maxbytes: must be >= 1, not {maxbytes}")
        self.job_id, self.owner, self.maxsize, self.maxbytes = job_id, owner, maxsize, maxbytes
        self.pending_bytes = 0
        self.dropped = 0  # intermediate events lost to coalescing
        self.overflowed = False
        self._bus = bus
        self._queue: deque[JobEvent] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._queue)

    def offer(self, event: JobEvent) -> None:
        """Queue an event without ever waiting (called by the publisher)."""
        if self._closed:
            return
        if self._full(event):
            self._coalesce(event.record.id)
            if self._full(event):
                # Every pending event is some job's latest: none may be dropped.
                self.overflowed = True
                self.dropped += len(self._queue)
                self._queue.clear()
                self.pending_bytes = 0
                self.close()
                return
        self._queue.append(event)
        self.pending_bytes += event.size
        self._ready.set()

    def _full(self, event: JobEvent) -> bool:
        """Whether `event` does not fit; one alone always fits, however large."""
        if not self._queue:
            return False
        return len(self._queue) >= self.maxsize or self.pending_bytes + event.size > self.maxbytes

    def _coalesce(self, incoming: str) -> None:
        latest: dict[str, JobEvent] = {}
        for event in self._queue:
            latest[event.record.id] = event
        latest.pop(incoming, None)  # the incoming event supersedes it
        kept = sorted(latest.values(), key=lambda e: e.seq)
        self.dropped += len(self._queue) - len(kept)
        self._queue = deque(kept)
        self.pending_bytes = sum(e.size for e in kept)

    async def next(self, timeout: float | None = None) -> JobEvent | None:  # noqa: ASYNC109
        """The next event; None when closed (after the queue is drained) or on timeout."""
        while not self._queue:
            if self._closed:
                return None
            self._ready.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._ready.wait()
            except TimeoutError:
                return None
        event = self._queue.popleft()
        self.pending_bytes -= event.size
        return event

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._bus._remove(self)
            self._ready.set()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """Fan-out of job records to subscriptions, by job id, by owner, and to all."""

    def __init__(
        self, queue_size: int = DEFAULT_QUEUE_SIZE, queue_bytes: int = DEFAULT_QUEUE_BYTES
    ) -> None:
        self.queue_size = queue_size
        self.queue_bytes = queue_bytes
        self._next_seq = 1
        self.last_seq = 0
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_owner: dict[str, set[Subscription]] = {}
        self._all: set[Subscription] = set()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(
        self, *, job_id: str | None = None, owner: str | None = None, maxsize: int | None = None
    ) -> Subscription:
        """Watch one job (`job_id`), one owner's jobs (`owner`), or, with neither, all."""
        if job_id is not None and owner is not None:
            raise ValueError("subscribe to a job or to an owner, not both")
        sub = Subscription(
            self,
            job_id=job_id,
            owner=owner,
            maxsize=maxsize or self.queue_size,
            maxbytes=self.queue_bytes,
        )
        if self._closed:
            sub.close()
        elif job_id is not None:
            self._by_job.setdefault(job_id, set()).add(sub)
        elif owner is not None:
            self._by_owner.setdefault(owner, set()).add(sub)
        else:
            self._all.add(sub)
        return sub

    def number_from(self, seq: int) -> None:
        """Number the next event `seq` (a feed's numbering: the last one was `seq - 1`)."""
        self._next_seq = seq
        self.last_seq = seq - 1

    def publish(self, record: JobRecord) -> JobEvent:
        """Hand the record to every interested subscriber, numbered next; never waits."""
        return self.publish_as(self._next_seq, record)

    def publish_as(self, seq: int, record: JobRecord) -> JobEvent:
        """Publish the record as the feed's change `seq`; never waits."""
        self._next_seq = max(self._next_seq, seq + 1)
        self.last_seq = max(self.last_seq, seq)
        event = JobEvent(seq, record, _RECORD_BYTES + sum(record.spec.content_sizes().values()))
        for sub in (
            *self._by_job.get(record.id, ()),
            *self._by_owner.get(record.owner, ()),
            *self._all,
        ):
            sub.offer(event)
        return event

    def subscriber_count(self) -> int:
        return (
            sum(len(s) for s in self._by_job.values())
            + sum(len(s) for s in self._by_owner.values())
            + len(self._all)
        )

    def close(self) -> None:
        """End every subscription (at shutdown); later subscriptions start closed."""
        self._closed = True
        for sub in self._subscriptions():
            sub.close()

    def overflow_all(self) -> None:
        """End every open subscription as overflowed (its watcher re-reads), when the feed
        lost changes it cannot publish; later subscriptions are served as usual."""
        for sub in self._subscriptions():
            sub.overflowed = True
            sub.close()

    def _subscriptions(self) -> list[Subscription]:
        return [
            *itertools.chain.from_iterable(self._by_job.values()),
            *itertools.chain.from_iterable(self._by_owner.values()),
            *self._all,
        ]

    def _remove(self, sub: Subscription) -> None:
        if sub.job_id is not None:
            _discard(self._by_job, sub.job_id, sub)
        elif sub.owner is not None:
            _discard(self._by_owner, sub.owner, sub)
        else:
            self._all.discard(sub)


def _discard(table: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
    subs = table.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del table[key]


class Publisher(Protocol):
    def publish(self, record: JobRecord) -> JobEvent: ...


class PublishingJobStore(JobStore):
    """A JobStore that publishes every record it writes, after the write succeeded
    (to an EventBus, or a LocalJobFeed that keeps them for resuming)."""

    def __init__(self, inner: JobStore, bus: Publisher) -> None:
        self.inner = inner
        self.bus = bus

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def ping(self) -> None:
        await self.inner.ping()

    async def insert(self, record: JobRecord) -> None:
        await self.inner.insert(record)
        self.bus.publish(record)

    async def insert_many(
        self, records: Sequence[JobRecord]
    ) -> list[DuplicateIdempotencyKey | None]:
        outcomes = await self.inner.insert_many(records)
        for record, outcome in zip(records, outcomes, strict=True):
            if outcome is None:
                self.bus.publish(record)
        return outcomes

    async def get(self, job_id: str) -> JobRecord | None:
        return await self.inner.get(job_id)

    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        record = await self.inner.update(job_id, **fields)
        self.bus.publish(record)
        return record

    async def update_many(
        self, changes: Sequence[tuple[str, dict[str, Any]]], *, lease: Lease | None = None
    ) -> list[JobRecord]:
        records = await self.inner.update_many(changes, lease=lease)
        for record in records:
            self.bus.publish(record)
        return records

    async def list(self, query: JobQuery) -> JobPage:
        return await self.inner.list(query)

    async def ended(self, query: Ended) -> list[JobRecord]:
        return await self.inner.ended(query)

    async def active(self) -> list[JobRecord]:
        return await self.inner.active()

    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        return await self.inner.count_by_center_state()
