"""The SQLite job store, the embedded default (its table: `job_rows`).

The store keeps a bounded LRU cache of job records by id, as the JSON text
they are parsed from, so a point read of a recently seen job needs neither the
database nor its thread. The gateway is the only writer of its jobs, through
this store: an update drops the id's entry when it is issued and stores the
re-read row when it is done, and a read fills the cache only if no write was
issued while it ran, so a read that follows a write never sees the old record.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.jobs.records import JobRecord
from gateway.jobs.store import (
    DuplicateIdempotencyKey,
    Ended,
    JobPage,
    JobQuery,
    JobStore,
    NoSuchJob,
)
from gateway.store.leases import Lease
from gateway.store.sqlite import job_rows as rows
from gateway.store.sqlite.file import SQLiteFile
from gateway.units import utcnow

#: How many job records the store keeps parsed-ready in memory.
RECORD_CACHE_SIZE = 4096
#: The cache holds at most this much record text; a record of more than 1/64 of it
#: (one with a large script) is not cached.
RECORD_CACHE_BYTES = 32 << 20


class SQLiteJobStore(SQLiteFile, JobStore):
    def __init__(
        self,
        path: Path,
        *,
        cache_size: int = RECORD_CACHE_SIZE,
        cache_bytes: int = RECORD_CACHE_BYTES,
    ) -> None:
        super().__init__(path)
        #: id -> the JSON text of the record as last read from the database.
        self._records: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._cache_bytes = cache_bytes
        self._cached_bytes = 0
        #: Counts the updates issued; a read fills the cache only if none began meanwhile.
        self._writes = 0

    # ------------------------------------------------------------ the cache

    def _forget(self, job_id: str) -> None:
        old = self._records.pop(job_id, None)
        if old is not None:
            self._cached_bytes -= len(old)

    def _remember(self, job_id: str, text: str) -> None:
        if self._cache_size <= 0:
            return
        self._forget(job_id)
        if len(text) > self._cache_bytes // 64:
            return  # a record with a large spec is read from the database each time
        self._records[job_id] = text
        self._cached_bytes += len(text)
        while len(self._records) > self._cache_size or self._cached_bytes > self._cache_bytes:
            _, dropped = self._records.popitem(last=False)
            self._cached_bytes -= len(dropped)

    def _parse(self, texts: Sequence[str], writes: int) -> list[JobRecord]:
        """Records of `texts`, remembered unless an update was issued since `writes`."""
        fill = writes == self._writes
        records = []
        for text in texts:
            record = rows.from_json(text)
            if fill:
                self._remember(record.id, text)
            records.append(record)
        return records

    def _issue_write(self, job_ids: Sequence[str]) -> int:
        """Before an update: reads already under way must not put back what it changes."""
        self._writes += 1
        for job_id in job_ids:
            self._forget(job_id)
        return self._writes

    async def close(self) -> None:
        self._records.clear()
        self._cached_bytes = 0
        await super().close()

    # ------------------------------------------------------------ writes

    async def insert(self, record: JobRecord) -> None:
        row = rows.to_row(record)

        def write(db: sqlite3.Connection) -> sqlite3.Row | None:
            try:
                db.execute(rows.INSERT, row)
                return None
            except sqlite3.IntegrityError:
                if record.idempotency_key is None:
                    raise
                return db.execute(rows.HOLDER, (record.owner, record.idempotency_key)).fetchone()

        existing = await self._call(write)
        if existing is not None:
            raise DuplicateIdempotencyKey(rows.from_row(existing))

    async def insert_many(
        self, records: Sequence[JobRecord]
    ) -> list[DuplicateIdempotencyKey | None]:
        new_rows = [rows.to_row(r) for r in records]

        def write(db: sqlite3.Connection) -> list[sqlite3.Row | None]:
            existing: list[sqlite3.Row | None] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for record, row in zip(records, new_rows, strict=True):
                    try:
                        db.execute(rows.INSERT, row)
                        existing.append(None)
                    except sqlite3.IntegrityError:  # this row only; the others go on
                        if record.idempotency_key is None:
                            raise
                        holder = (record.owner, record.idempotency_key)
                        existing.append(db.execute(rows.HOLDER, holder).fetchone())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return existing

        found = await self._call(write)
        return [None if r is None else DuplicateIdempotencyKey(rows.from_row(r)) for r in found]

    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        return (await self.update_many([(job_id, fields)]))[0]

    async def update_many(
        self, changes: Sequence[tuple[str, dict[str, Any]]], *, lease: Lease | None = None
    ) -> list[JobRecord]:
        # One process writes this file and holds every lease it asks for: `lease` holds.
        now = utcnow()
        statements = [(job_id, *rows.update_sql(fields, now)) for job_id, fields in changes]
        ids = [job_id for job_id, _ in changes]
        writes = self._issue_write(ids)

        def write(db: sqlite3.Connection) -> list[str]:
            texts = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for job_id, sql, values in statements:
                    db.execute(sql, {**values, "_id": job_id})
                    row = db.execute(rows.GET, (job_id,)).fetchone()
                    if row is None:
                        raise NoSuchJob(job_id)
                    texts.append(row[0])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return texts

        try:
            texts = await self._call(write)
        except BaseException:
            for job_id in ids:
                self._forget(job_id)
            raise
        # Only the last update issued for any job may fill the cache; the writes run
        # in the order issued, on the one thread, so its rows are the newest.
        return self._parse(texts, writes)

    # ------------------------------------------------------------ reads

    async def get(self, job_id: str) -> JobRecord | None:
        text = self._records.get(job_id)
        if text is not None:
            self._records.move_to_end(job_id)
            # A fresh record each time: callers may change theirs.
            return JobRecord.model_validate_json(text)
        writes = self._writes
        row = await self._call(lambda db: db.execute(rows.GET, (job_id,)).fetchone())
        return self._parse([row[0]], writes)[0] if row else None

    async def list(self, query: JobQuery) -> JobPage:
        sql, args = rows.list_sql(query)
        limit, max_bytes = query.limit, query.max_bytes
        writes = self._writes

        def page(db: sqlite3.Connection) -> tuple[list[str], bool]:
            """Up to `limit` records' texts and whether more follow; past `max_bytes`
            of text (at least one record) the page ends early, without reading on."""
            texts: list[str] = []
            size = 0
            for (text,) in db.execute(sql, args):
                if len(texts) == limit or (
                    max_bytes is not None and texts and size + len(text) > max_bytes
                ):
                    return texts, True
                texts.append(text)
                size += len(text)
            return texts, False

        texts, more = await self._call(page)
        jobs = self._parse(texts, writes)
        next_cursor = rows.encode_cursor(jobs[-1]) if more and jobs else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    async def ended(self, query: Ended) -> list[JobRecord]:
        sql, args = rows.finished_sql(query)
        found = await self._call(lambda db: db.execute(sql, args).fetchall())
        return [rows.from_json(r[0]) for r in found]

    async def active(self) -> list[JobRecord]:
        # Parsed in the store's thread: with thousands of jobs this is the poller's
        # largest piece of work, and the event loop goes on serving meanwhile.
        return await self._call(
            lambda db: [
                rows.from_json(r[0]) for r in db.execute(rows.ACTIVE, rows.TERMINAL).fetchall()
            ]
        )

    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        found = await self._call(lambda db: db.execute(rows.COUNTS).fetchall())
        return {(r[0], r[1]): r[2] for r in found}
