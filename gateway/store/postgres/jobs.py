"""The PostgreSQL job store, shared by every replica.

No record is cached in the process: another replica may have written it since.
Within the process, the updates of one job are applied in the order they were
issued (each waits for those of its jobs issued before it), as with the embedded
store: two tasks changing one job leave the change issued last.
Each record is built as JSON text by the server and parsed by pydantic in one
pass; `active` and `finished` have the server leave out the specs' content.
Idempotency keys are unique per owner in the table itself, so two replicas
inserting one key at once store one job, and the second hands back the first's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg

from gateway.jobs.records import JobRecord
from gateway.jobs.store import (
    DuplicateIdempotencyKey,
    Ended,
    JobPage,
    JobQuery,
    JobStore,
    NoSuchJob,
)
from gateway.store.leases import Lease, LeaseLost
from gateway.store.postgres import job_rows as rows
from gateway.store.postgres.pool import OnPool, PgPool
from gateway.units import utcnow


def _record(text: str) -> JobRecord:
    return JobRecord.model_validate_json(text)


class _IssueOrder:
    """Writes of the same ids run one after the other, in the order issued: each
    takes its place behind the last write issued for any of its ids, at once."""

    def __init__(self) -> None:
        self._last: dict[str, asyncio.Future[None]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, ids: Sequence[str]) -> AsyncIterator[None]:
        mine: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        keys = set(ids)
        before = {self._last[i] for i in keys if i in self._last}
        for i in keys:
            self._last[i] = mine
        try:
            if before:
                await asyncio.wait(before)  # never cancels them, whatever happens here
            yield
        finally:
            mine.set_result(None)
            for i in keys:
                if self._last.get(i) is mine:
                    del self._last[i]


class PgJobStore(OnPool, JobStore):
    def __init__(self, pool: PgPool) -> None:
        super().__init__(pool)
        self._order = _IssueOrder()

    # ------------------------------------------------------------ writes

    @staticmethod
    async def _insert(
        conn: psycopg.AsyncConnection[Any], record: JobRecord, row: dict[str, Any]
    ) -> DuplicateIdempotencyKey | None:
        cur = await conn.execute(rows.INSERT, row)
        if await cur.fetchone() is not None:
            return None
        # The key's holder, committed by now (the insert waited for its transaction).
        cur = await conn.execute(rows.HOLDER, (record.owner, record.idempotency_key))
        found = await cur.fetchone()
        if found is None:  # the holder's transaction rolled back: try again
            return await PgJobStore._insert(conn, record, row)
        return DuplicateIdempotencyKey(_record(found[0]))

    async def insert(self, record: JobRecord) -> None:
        row = rows.to_row(record)
        async with self.pool.connection() as conn:
            duplicate = await self._insert(conn, record, row)
        if duplicate is not None:
            raise duplicate

    async def insert_many(
        self, records: Sequence[JobRecord]
    ) -> list[DuplicateIdempotencyKey | None]:
        new_rows = [rows.to_row(r) for r in records]
        # Keys are taken in one order by every replica, so that two batches sharing
        # keys wait for each other instead of deadlocking; among records of one key,
        # the first given is the first stored.
        order = sorted(
            range(len(records)),
            key=lambda i: (
                records[i].idempotency_key is None,
                records[i].owner,
                records[i].idempotency_key or "",
                i,
            ),
        )
        out: list[DuplicateIdempotencyKey | None] = [None] * len(records)
        async with self.pool.transaction() as conn:
            for i in order:
                out[i] = await self._insert(conn, records[i], new_rows[i])
        return out

    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        return (await self.update_many([(job_id, fields)]))[0]

    async def update_many(
        self, changes: Sequence[tuple[str, dict[str, Any]]], *, lease: Lease | None = None
    ) -> list[JobRecord]:
        now = utcnow()
        statements = [(job_id, *rows.update_sql(fields, now)) for job_id, fields in changes]
        texts: list[str] = []
        async with (
            self._order.turn([job_id for job_id, _ in changes]),
            self.pool.transaction() as conn,
        ):
            if lease is not None:
                cur = await conn.execute(rows.LEASE_HELD, (lease.name, lease.holder, lease.fence))
                if await cur.fetchone() is None:
                    raise LeaseLost(lease)
            for job_id, statement, values in statements:
                cur = await conn.execute(statement, {**values, "_id": job_id})
                found = await cur.fetchone()
                if found is None:
                    raise NoSuchJob(job_id)
                texts.append(found[0])
        return [_record(t) for t in texts]

    # ------------------------------------------------------------ reads

    async def _texts(self, statement: str, args: Sequence[Any]) -> list[str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(statement, args)
            return [r[0] for r in await cur.fetchall()]

    async def get(self, job_id: str) -> JobRecord | None:
        found = await self._texts(rows.GET, (job_id,))
        return _record(found[0]) if found else None

    async def list(self, query: JobQuery) -> JobPage:
        statement, args = rows.list_sql(query)
        async with self.pool.connection() as conn:
            cur = await conn.execute(statement, args)
            found = await cur.fetchall()
        jobs = [_record(text) for text, _ in found]
        more = bool(found) and found[0][1] > len(found)
        return JobPage(jobs=jobs, next_cursor=rows.encode_cursor(jobs[-1]) if more else None)

    async def ended(self, query: Ended) -> list[JobRecord]:
        statement, args = rows.finished_sql(query)
        return [_record(t) for t in await self._texts(statement, args)]

    async def active(self) -> list[JobRecord]:
        return [_record(t) for t in await self._texts(rows.ACTIVE, (rows.TERMINAL,))]

    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(rows.COUNTS)
            return {(c, s): n for c, s, n in await cur.fetchall()}
