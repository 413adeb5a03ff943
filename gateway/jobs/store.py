"""The JobStore interface every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from adapters.base import JobState
from gateway.jobs.models import JobRecord


class StoreError(Exception):
    """The store failed; nothing was written by the failing call."""


class DuplicateIdempotencyKey(StoreError):
    def __init__(self, existing: JobRecord) -> None:
        super().__init__("idempotency key already used")
        self.existing = existing


@dataclass(frozen=True)
class JobPage:
    jobs: list[JobRecord]
    next_cursor: str | None


class JobStore(abc.ABC):
    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise StoreError if the store cannot serve."""

    @abc.abstractmethod
    async def insert(self, record: JobRecord) -> None:
        """Store a new record durably; raise DuplicateIdempotencyKey on a reused key."""

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
    async def get(self, job_id: str) -> JobRecord | None: ...

    @abc.abstractmethod
    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        """Change some fields (updated_at is set) and return the new record."""

    async def update_many(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> list[JobRecord]:
        """`update` of each (job id, fields), together where the store can (one commit)."""
        return [await self.update(job_id, **fields) for job_id, fields in changes]

    @abc.abstractmethod
    async def list(
        self,
        *,
        owner: str | None,
        states: Sequence[JobState] = (),
        center: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        max_bytes: int | None = None,
    ) -> JobPage:
        """Newest first; `owner=None` lists every owner's jobs. A page holds at most
        `limit` records and ends early (with a cursor) past about `max_bytes` of
        records, always holding at least one."""

    @abc.abstractmethod
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

    @abc.abstractmethod
    async def active(self) -> list[JobRecord]:
        """Every job not yet in a terminal state, for the poller, placement and health.

        Each spec comes without its content: `script` is "" where the job has one, and
        `arguments` and `environment` are empty, so that thousands of jobs with large
        scripts cost little memory. What sends a job re-reads it with `get`."""

    @abc.abstractmethod
    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        """(center, state) -> how many jobs, terminal and not, for the metrics."""
