"""Job feeds: where the events of `gateway.jobs.events` come from.

Where the changes come from is a `JobFeed`, built by the store backend: the
events of one process (`LocalJobFeed`: the writes of this process, and a bounded
ring of the recent ones), or a feed every replica of a shared database reads. A
feed numbers its changes in one increasing order, which is each event's id, and
replays what a watcher missed after the id of the last event it saw (`since`).
"""

from __future__ import annotations

import abc
import time
from collections import deque
from collections.abc import Iterable

from gateway.jobs.events import EventBus, JobEvent, PublishingJobStore
from gateway.jobs.records import JobRecord
from gateway.jobs.store import JobStore

#: Events the in-process feed keeps for resuming, and the bytes of their records.
DEFAULT_RING_SIZE = 1024
DEFAULT_RING_BYTES = 16 << 20
#: The most jobs one resume replays; a watcher that missed changes of more re-reads.
REPLAY_MAX_JOBS = 1000


class ReplayUnavailable(Exception):
    """The changes after a watcher's last event id cannot be replayed: they are older
    than the feed keeps, too many, or the id is not one of the feed's. The watcher
    must re-read what it follows (a full resync)."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"events after {seq}: {reason}")
        self.seq = seq
        self.reason = reason


class JobFeed(abc.ABC):
    """The ordered feed of job changes behind an EventBus.

    `start(jobs, bus)` begins publishing every change of a job record into `bus`, its
    event numbered with the feed's sequence number, and returns the JobStore that
    writes go through (`jobs` itself when the backend sees every write on its own).
    `since(seq, ...)` gives what a watcher that last saw event `seq` missed: each
    changed job once, at its newest record and the number of its newest change, in
    that order, and only the jobs of `owner` (None: every owner's) or the job
    `job_id`; ReplayUnavailable when that cannot be told.
    """

    @abc.abstractmethod
    async def start(self, jobs: JobStore, bus: EventBus) -> JobStore: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def since(
        self, seq: int, *, owner: str | None = None, job_id: str | None = None
    ) -> list[JobEvent]: ...


def newest_per_job(
    events: Iterable[JobEvent], *, owner: str | None = None, job_id: str | None = None
) -> list[JobEvent]:
    """Each job's last event of `events` (those of `owner` or `job_id`), in seq order."""
    latest: dict[str, JobEvent] = {}
    for event in events:
        record = event.record
        if (owner is None or record.owner == owner) and (job_id is None or record.id == job_id):
            latest[record.id] = event
    return sorted(latest.values(), key=lambda e: e.seq)


class LocalJobFeed(JobFeed):
    """The feed of a store one process serves: the changes its own writes publish (it
    wraps the store in a PublishingJobStore), with a ring of the recent ones, bounded
    in events and bytes, for resuming. Numbers start from the clock in microseconds,
    so those of an earlier run of the process are older than any this one keeps and
    a resume from one of them is refused (a full resync), never misread."""

    def __init__(
        self,
        keep: int = DEFAULT_RING_SIZE,
        keep_bytes: int = DEFAULT_RING_BYTES,
        *,
        first: int | None = None,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep: must be >= 1, not {keep}")
        self.keep, self.keep_bytes = keep, keep_bytes
        self._first = time.time_ns() // 1000 if first is None else first
        #: The oldest replayable position: a watcher that saw this event missed nothing kept.
        self.floor = self._first - 1
        self._ring: deque[JobEvent] = deque()
        self._ring_bytes = 0
        self._bus: EventBus | None = None

    async def start(self, jobs: JobStore, bus: EventBus) -> JobStore:
        self._bus = bus
        bus.number_from(self._first)
        return PublishingJobStore(jobs, self)

    async def close(self) -> None:
        self._bus = None

    def publish(self, record: JobRecord) -> JobEvent:
        if self._bus is None:
            raise RuntimeError("the feed is not started")
        event = self._bus.publish(record)
        self._ring.append(event)
        self._ring_bytes += event.size
        while len(self._ring) > self.keep or (
            self._ring_bytes > self.keep_bytes and len(self._ring) > 1
        ):
            gone = self._ring.popleft()
            self._ring_bytes -= gone.size
            self.floor = gone.seq
        return event

    async def since(
        self, seq: int, *, owner: str | None = None, job_id: str | None = None
    ) -> list[JobEvent]:
        last = self._bus.last_seq if self._bus is not None else self.floor
        if seq < self.floor:
            raise ReplayUnavailable(seq, "older than the events this gateway keeps")
        if seq > last:
            raise ReplayUnavailable(seq, "not an event of this gateway")
        missed = newest_per_job((e for e in self._ring if e.seq > seq), owner=owner, job_id=job_id)
        if len(missed) > REPLAY_MAX_JOBS:
            raise ReplayUnavailable(seq, f"changes of more than {REPLAY_MAX_JOBS} jobs")
        return missed
