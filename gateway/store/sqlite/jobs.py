"""SQLite store, the embedded default.

Every call runs on one dedicated thread, so the event loop never blocks on
disk and SQLite sees a single writer. WAL mode and synchronous=FULL: a record
acknowledged to a client survives a crash of the process or the machine.

The job store keeps a bounded LRU cache of job records by id, as the JSON text
they are parsed from, so a point read of a recently seen job needs neither the
database nor its thread. The gateway is the only writer of its jobs, through
this store: an update drops the id's entry when it is issued and stores the
re-read row when it is done, and a read fills the cache only if no write was
issued while it ran, so a read that follows a write never sees the old record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from adapters.base import TERMINAL_STATES, JobState
from gateway.jobs.models import JobRecord, JobSpec
from gateway.jobs.store import DuplicateIdempotencyKey, JobPage, JobStore, StoreError
from gateway.units import utcnow

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    center TEXT NOT NULL,
    login TEXT,
    state TEXT NOT NULL,
    native_id TEXT,
    native_state TEXT,
    reason TEXT,
    exit_code INTEGER,
    idempotency_key TEXT,
    elements TEXT NOT NULL DEFAULT '[]',
    staging TEXT NOT NULL DEFAULT '{}',
    placement TEXT,
    price TEXT,
    usage TEXT,
    started_at TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    submit_attempts INTEGER NOT NULL DEFAULT 0,
    spec TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    submitted_at TEXT,
    finished_at TEXT
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (owner, idempotency_key) WHERE idempotency_key IS NOT NULL;
"""

_COLUMNS = (
    "id owner center login state native_id native_state reason exit_code idempotency_key elements "
    "staging placement price usage started_at cancel_requested submit_attempts spec created_at "
    "updated_at submitted_at finished_at"
).split()
# Column names are the fixed tuple above, never user input.
_INSERT = (
    f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join(':' + c for c in _COLUMNS)})"  # noqa: S608
)
_UPDATABLE = set(_COLUMNS) - {"id", "owner", "login", "created_at", "spec"}
_TERMINAL = tuple(sorted(s.value for s in TERMINAL_STATES))


#: Columns added after the first release: name -> definition, for older databases.
_ADDED_COLUMNS = {
    "elements": "TEXT NOT NULL DEFAULT '[]'",
    "login": "TEXT",
    "staging": "TEXT NOT NULL DEFAULT '{}'",
    "placement": "TEXT",
    "price": "TEXT",
    "usage": "TEXT",
    "started_at": "TEXT",
}
#: Columns holding a time (or NULL), each written by `_time_text`.
_TIME_COLUMNS = ("created_at", "updated_at", "submitted_at", "started_at", "finished_at")
#: Columns holding a JSON document (or NULL).
_JSON_COLUMNS = ("placement", "price", "usage")
#: Columns holding a JSON document that is never NULL -> the text standing for an empty one.
_DOCUMENT_COLUMNS = {"spec": "", "elements": "", "staging": "{}"}
#: How many job records the store keeps parsed-ready in memory.
RECORD_CACHE_SIZE = 4096
#: The cache holds at most this much record text; a record of more than 1/64 of it
#: (one with a large script) is not cached.
RECORD_CACHE_BYTES = 32 << 20


def _to_row(record: JobRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json", exclude={"spec"})
    row["spec"] = record.spec.model_dump_json(exclude_none=True)
    row["elements"] = json.dumps(row["elements"])
    row["staging"] = json.dumps(row["staging"])
    for column in _JSON_COLUMNS:
        row[column] = json.dumps(row[column]) if row[column] is not None else None
    row["cancel_requested"] = int(record.cancel_requested)
    for column in _TIME_COLUMNS:
        moment = getattr(record, column)
        row[column] = _time_text(moment) if moment is not None else None
    return row


def _json_expression(column: str) -> str:
    """The SQL giving `column` as a JSON value, as `_from_row` would read it."""
    if column in _DOCUMENT_COLUMNS:
        empty = _DOCUMENT_COLUMNS[column]
        return f"json(coalesce(nullif({column}, ''), '{empty}'))" if empty else f"json({column})"
    if column in _JSON_COLUMNS:
        return f"json(nullif({column}, ''))"
    if column == "cancel_requested":
        return "json(CASE WHEN cancel_requested THEN 'true' ELSE 'false' END)"
    return column


def _record_sql(spec: str) -> str:
    """Each selected row as the JSON text of its JobRecord, built by SQLite itself so
    that the event loop only has pydantic parse it, in one pass in Rust; `spec` is the
    SQL for the spec's JSON. Column names are the fixed tuple above, never user input."""
    values = (f"'{c}', {spec if c == 'spec' else _json_expression(c)}" for c in _COLUMNS)
    return f"json_object({', '.join(values)})"


_RECORD = _record_sql(_json_expression("spec"))
_GET = f"SELECT {_RECORD} FROM jobs WHERE id = ?"  # noqa: S608
#: A record without its spec's content (script "", no arguments, no environment), as
#: `JobStore.active` and `finished` give it: a few hundred bytes whatever the script,
#: and the large text never reaches Python.
_SUMMARY = _record_sql(
    "json_replace(json_remove(json(spec), '$.arguments', '$.environment'), '$.script', '')"
)


def _from_json(text: str) -> JobRecord:
    return JobRecord.model_validate_json(text)


def _from_row(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    data["spec"] = JobSpec.model_validate_json(data["spec"])
    data["elements"] = json.loads(data["elements"])
    data["staging"] = json.loads(data["staging"] or "{}")
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column]) if data[column] else None
    data["cancel_requested"] = bool(data["cancel_requested"])
    return JobRecord.model_validate(data)


def _time_text(moment: datetime) -> str:
    """`moment` as the store writes every time: in UTC, with all six digits of its
    microseconds (`2026-12-03T11:14:45.000000Z`), so that SQL compares and orders
    the texts as the times they stand for. A naive time is taken as UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _column_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return _time_text(value)
    if isinstance(value, JobState):
        return value.value
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, BaseModel):  # staging, placement, price, usage
        return value.model_dump_json()
    if isinstance(value, list):  # elements
        return json.dumps(
            [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
        )
    return value


def _encode_cursor(record: JobRecord) -> str:
    raw = f"{_time_text(record.created_at)}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raise ValueError on a cursor this store did not make."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        # Compared with the stored text: in its form, whatever form the cursor has.
        return _time_text(datetime.fromisoformat(created)), job_id
    except Exception as exc:
        raise ValueError("not a cursor returned by this API") from exc


def connect(path: Path) -> sqlite3.Connection:
    """A connection as every table of the gateway's database wants it: WAL, full sync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class SQLiteFile:
    """One connection to the gateway's database, used from one thread of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            if self._db is None:
                raise StoreError("store is not open")
            try:
                return fn(self._db)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    def _prepare(self, db: sqlite3.Connection) -> None:
        """Create or upgrade the tables this store keeps."""

    async def open(self) -> None:
        def open_db() -> None:
            db = connect(self.path)
            self._prepare(db)
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, open_db)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)


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
            record = _from_json(text)
            if fill:
                self._remember(record.id, text)
            records.append(record)
        return records

    async def close(self) -> None:
        self._records.clear()
        self._cached_bytes = 0
        await super().close()

    def _prepare(self, db: sqlite3.Connection) -> None:
        existing = {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
        if existing:
            for column, definition in _ADDED_COLUMNS.items():
                if column not in existing:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
        db.executescript(_SCHEMA)

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchone())

    async def insert(self, record: JobRecord) -> None:
        row = _to_row(record)
        sql = _INSERT

        def write(db: sqlite3.Connection) -> sqlite3.Row | None:
            try:
                db.execute(sql, row)
                return None
            except sqlite3.IntegrityError:
                if record.idempotency_key is None:
                    raise
                return db.execute(
                    "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                    (record.owner, record.idempotency_key),
                ).fetchone()

        existing = await self._call(write)
        if existing is not None:
            raise DuplicateIdempotencyKey(_from_row(existing))

    async def insert_many(
        self, records: Sequence[JobRecord]
    ) -> list[DuplicateIdempotencyKey | None]:
        rows = [_to_row(r) for r in records]

        def write(db: sqlite3.Connection) -> list[sqlite3.Row | None]:
            existing: list[sqlite3.Row | None] = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for record, row in zip(records, rows, strict=True):
                    try:
                        db.execute(_INSERT, row)
                        existing.append(None)
                    except sqlite3.IntegrityError:  # this row only; the others go on
                        if record.idempotency_key is None:
                            raise
                        existing.append(
                            db.execute(
                                "SELECT * FROM jobs WHERE owner = ? AND idempotency_key = ?",
                                (record.owner, record.idempotency_key),
                            ).fetchone()
                        )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return existing

        found = await self._call(write)
        return [None if row is None else DuplicateIdempotencyKey(_from_row(row)) for row in found]

    async def get(self, job_id: str) -> JobRecord | None:
        text = self._records.get(job_id)
        if text is not None:
            self._records.move_to_end(job_id)
            # A fresh record each time: callers may change theirs.
            return JobRecord.model_validate_json(text)
        writes = self._writes
        row = await self._call(lambda db: db.execute(_GET, (job_id,)).fetchone())
        return self._parse([row[0]], writes)[0] if row else None

    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        fields["updated_at"] = utcnow()
        values = {k: _column_value(v) for k, v in fields.items()}
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        values["_id"] = job_id
        # Reads already under way must not put back what this changes.
        self._writes += 1
        writes = self._writes
        self._forget(job_id)

        def write(db: sqlite3.Connection) -> sqlite3.Row:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = :_id", values)  # noqa: S608
            row = db.execute(_GET, (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"job {job_id} does not exist")
            return row

        try:
            row = await self._call(write)
        except BaseException:
            self._forget(job_id)
            raise
        # Only the last update issued for any job may fill the cache; the writes run
        # in the order issued, on the one thread, so its row is the newest.
        return self._parse([row[0]], writes)[0]

    async def update_many(self, changes: Sequence[tuple[str, dict[str, Any]]]) -> list[JobRecord]:
        now = utcnow()
        statements = []
        for job_id, fields in changes:
            unknown = set(fields) - _UPDATABLE
            if unknown:
                raise ValueError(f"cannot update {sorted(unknown)}")
            values = {k: _column_value(v) for k, v in {**fields, "updated_at": now}.items()}
            assignments = ", ".join(f"{k} = :{k}" for k in values)
            statements.append((job_id, f"UPDATE jobs SET {assignments} WHERE id = :_id", values))  # noqa: S608
        self._writes += 1
        writes = self._writes
        for job_id, _ in changes:
            self._forget(job_id)

        def write(db: sqlite3.Connection) -> list[str]:
            texts = []
            db.execute("BEGIN IMMEDIATE")
            try:
                for job_id, sql, values in statements:
                    db.execute(sql, {**values, "_id": job_id})
                    row = db.execute(_GET, (job_id,)).fetchone()
                    if row is None:
                        raise StoreError(f"job {job_id} does not exist")
                    texts.append(row[0])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return texts

        try:
            texts = await self._call(write)
        except BaseException:
            for job_id, _ in changes:
                self._forget(job_id)
            raise
        return self._parse(texts, writes)

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
        where: list[str] = []
        args: list[Any] = []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if states:
            where.append(f"state IN ({', '.join('?' for _ in states)})")
            args.extend(s.value for s in states)
        if center is not None:
            where.append("center = ?")
            args.append(center)
        if cursor is not None:
            created, job_id = decode_cursor(cursor)
            where.append("(created_at < ? OR (created_at = ? AND id < ?))")
            args.extend([created, created, job_id])
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT {_RECORD} FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?"  # noqa: S608
        args.append(limit + 1)
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
        next_cursor = _encode_cursor(jobs[-1]) if more and jobs else None
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    async def finished(
        self,
        *,
        owner: str | None,
        center: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[JobRecord]:
        where = [f"state IN ({', '.join('?' for _ in _TERMINAL)})"]
        args: list[Any] = list(_TERMINAL)
        for column, value in (("owner", owner), ("center", center)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if since is not None:
            where.append("finished_at >= ?")
            args.append(_time_text(since))
        if until is not None:
            where.append("finished_at < ?")
            args.append(_time_text(until))
        sql = f"SELECT {_SUMMARY} FROM jobs WHERE {' AND '.join(where)} ORDER BY finished_at"  # noqa: S608
        rows = await self._call(lambda db: db.execute(sql, args).fetchall())
        return [_from_json(r[0]) for r in rows]

    async def active(self) -> list[JobRecord]:
        marks = ", ".join("?" for _ in _TERMINAL)
        sql = f"SELECT {_SUMMARY} FROM jobs WHERE state NOT IN ({marks}) ORDER BY created_at"  # noqa: S608
        # Parsed in the store's thread: with thousands of jobs this is the poller's
        # largest piece of work, and the event loop goes on serving meanwhile.
        return await self._call(
            lambda db: [_from_json(r[0]) for r in db.execute(sql, _TERMINAL).fetchall()]
        )

    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        sql = "SELECT center, state, COUNT(*) FROM jobs GROUP BY center, state"
        rows = await self._call(lambda db: db.execute(sql).fetchall())
        return {(r[0], r[1]): r[2] for r in rows}
