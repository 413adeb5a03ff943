"""The JobStore contract every backend implements: job records and their
idempotency keys.

Errors are part of the contract: every failing call raises `StoreError` (or one
of its kinds below) and writes nothing. Callers rely on `DuplicateIdempotencyKey`
(a reused key hands back the job that holds it), `InvalidCursor` (a cursor the
store did not make) and `NoSuchJob` (an update of a job that does not exist).
Asking to change a field that cannot change (`id`, `owner`, `login`, `spec`,
`created_at`) is a programming error: ValueError, nothing written.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import JobState
from gateway.jobs.records import JobRecord
from gateway.store.contract import Store, StoreError
from gateway.store.leases import Lease

__all__ = [
    "DuplicateIdempotencyKey",
    "Ended",
    "InvalidCursor",
    "JobPage",
    "JobQuery",
    "JobStore",
    "NoSuchJob",
    "StoreError",
]

#: What the fields of a record that never change are called.
FIXED_FIELDS = frozenset({"id", "owner", "login", "created_at", "spec"})


class DuplicateIdempotencyKey(StoreError):
    """The owner already has a job with this idempotency key: `existing`."""

    def __init__(self, existing: JobRecord) -> None:
        super().__init__("idempotency key already used")
        self.existing = existing


class InvalidCursor(StoreError):
    """A cursor this store did not return (the message says so, for the client)."""

    def __init__(self) -> None:
        super().__init__("not a cursor returned by this API")


class NoSuchJob(StoreError):
    """An update named a job the store does not have."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} does not exist")
        self.job_id = job_id


@dataclass(frozen=True)
class JobQuery:
    """Which jobs to list, and which page of them. `owner=None`: every owner's."""

    owner: str | None
    states: Sequence[JobState] = ()
    center: str | None = None
    limit: int = 100
    cursor: str | None = None  # from the previous page's next_cursor
    max_bytes: int | None = None  # the page ends early past about this much of records
    tasks_only: bool = False  # only jobs created from a GA4GH TES task (`JobRecord.task`)


@dataclass(frozen=True)
class Ended:
    """Which ended jobs `JobStore.finished` gives: `owner`'s (None: every owner's), at
    `center` (None: at any), that ended in [since, until) (None: unbounded)."""

    owner: str | None
    center: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_cursor: str | None


class JobStore(Store):
    @abc.abstractmethod
    async def insert(self, record: JobRecord) -> None:
        """Store a new record durably; raise DuplicateIdempotencyKey when its owner
        already has a job with its idempotency key (keys are per owner)."""

    async def insert_many(
        self, records: Sequence[JobRecord]
    ) -> list[DuplicateIdempotencyKey | None]:
        """Store new records durably, together where the store can (one commit); per
        record None, or the DuplicateIdempotencyKey that `insert` would raise."""
        out: list[DuplicateIdempotencyKey | None] = []
        for record in records:
            try:
                await self.insert(record)
                out.append(None)
            except DuplicateIdempotencyKey as dup:
                out.append(dup)
        return out

    @abc.abstractmethod
    async def get(self, job_id: str) -> JobRecord | None:
        """The whole record (spec and all), a copy the caller may change; None if absent."""

    @abc.abstractmethod
    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        """Change some fields (updated_at is set) and return the new record. Raises
        NoSuchJob for an unknown id, ValueError for a field in FIXED_FIELDS."""

    async def update_many(
        self, changes: Sequence[tuple[str, dict[str, Any]]], *, lease: Lease | None = None
    ) -> list[JobRecord]:
        """`update` of each (job id, fields), together where the store can (one commit).

        With `lease` (the poller's lease of the jobs' center), nothing is written
        unless the lease is still held with its fence: LeaseLost otherwise. A store
        serving one process, whose leases are all its own, may take it as held."""
        return [await self.update(job_id, **fields) for job_id, fields in changes]

    @abc.abstractmethod
    async def list(self, query: JobQuery) -> JobPage:
        """Newest first (by creation time, then id); a page holds at most `query.limit`
        records and ends early (with a cursor) past about `query.max_bytes` of records,
        always holding at least one. Following the cursors reaches every matching job
        once, also when many share a creation instant. Raises InvalidCursor."""

    async def finished(
        self,
        *,
        owner: str | None,
        center: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[JobRecord]:
        """Jobs in a terminal state that ended in [since, until), oldest first, without
        their specs' content (as `active`): what billing needs."""
        return await self.ended(Ended(owner, center, since, until))

    @abc.abstractmethod
    async def ended(self, query: Ended) -> list[JobRecord]:
        """`finished` of the jobs `query` names: what a backend implements."""

    @abc.abstractmethod
    async def active(self) -> list[JobRecord]:
        """Every job not yet in a terminal state, for the poller, placement and health.

        Each spec comes without its content: `script` is "" where the job has one, and
        `arguments` and `environment` are empty, so that thousands of jobs with large
        scripts cost little memory. What sends a job re-reads it with `get`."""

    @abc.abstractmethod
    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        """(center, state) -> how many jobs, terminal and not, for the metrics."""
