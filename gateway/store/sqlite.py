"""SQLite store, the embedded default.

Every call runs on one dedicated thread, so the event loop never blocks on
disk and SQLite sees a single writer. WAL mode and synchronous=FULL: a record
acknowledged to a client survives a crash of the process or the machine.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from adapters.base import TERMINAL_STATES
from gateway.models import JobRecord, JobSpec, JobState, utcnow
from gateway.store.base import DuplicateIdempotencyKey, JobPage, JobStore, StoreError

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
#: Columns holding a JSON document (or NULL).
_JSON_COLUMNS = ("placement", "price", "usage")


def _to_row(record: JobRecord) -> dict[str, Any]:
    row = record.model_dump(mode="json", exclude={"spec"})
    row["spec"] = record.spec.model_dump_json(exclude_none=True)
    row["elements"] = json.dumps(row["elements"])
    row["staging"] = json.dumps(row["staging"])
    for column in _JSON_COLUMNS:
        row[column] = json.dumps(row[column]) if row[column] is not None else None
    row["cancel_requested"] = int(record.cancel_requested)
    return row


def _from_row(row: sqlite3.Row) -> JobRecord:
    data = dict(row)
    data["spec"] = JobSpec.model_validate_json(data["spec"])
    data["elements"] = json.loads(data["elements"])
    data["staging"] = json.loads(data["staging"] or "{}")
    for column in _JSON_COLUMNS:
        data[column] = json.loads(data[column]) if data[column] else None
    data["cancel_requested"] = bool(data["cancel_requested"])
    return JobRecord.model_validate(data)


def _column_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
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
    raw = f"{record.created_at.isoformat()}|{record.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Raise ValueError on a cursor this store did not make."""
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        created, job_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        datetime.fromisoformat(created)
    except Exception as exc:
        raise ValueError("not a cursor returned by this API") from exc
    return created, job_id


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

    async def get(self, job_id: str) -> JobRecord | None:
        row = await self._call(
            lambda db: db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        )
        return _from_row(row) if row else None

    async def update(self, job_id: str, **fields: Any) -> JobRecord:
        unknown = set(fields) - _UPDATABLE
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}")
        fields["updated_at"] = utcnow()
        values = {k: _column_value(v) for k, v in fields.items()}
        assignments = ", ".join(f"{k} = :{k}" for k in values)
        values["_id"] = job_id

        def write(db: sqlite3.Connection) -> sqlite3.Row:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = :_id", values)  # noqa: S608
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise StoreError(f"job {job_id} does not exist")
            return row

        return _from_row(await self._call(write))

    async def list(
        self,
        *,
        owner: str | None,
        states: Sequence[JobState] = (),
        center: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
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
        sql = f"SELECT * FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?"  # noqa: S608
        args.append(limit + 1)
        rows = await self._call(lambda db: db.execute(sql, args).fetchall())
        jobs = [_from_row(r) for r in rows[:limit]]
        next_cursor = _encode_cursor(jobs[-1]) if len(rows) > limit and jobs else None
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
            args.append(since.isoformat())
        if until is not None:
            where.append("finished_at < ?")
            args.append(until.isoformat())
        sql = f"SELECT * FROM jobs WHERE {' AND '.join(where)} ORDER BY finished_at"  # noqa: S608
        rows = await self._call(lambda db: db.execute(sql, args).fetchall())
        return [_from_row(r) for r in rows]

    async def active(self) -> list[JobRecord]:
        marks = ", ".join("?" for _ in _TERMINAL)
        sql = f"SELECT * FROM jobs WHERE state NOT IN ({marks}) ORDER BY created_at"  # noqa: S608
        rows = await self._call(lambda db: db.execute(sql, _TERMINAL).fetchall())
        return [_from_row(r) for r in rows]

    async def count_by_center_state(self) -> dict[tuple[str, str], int]:
        sql = "SELECT center, state, COUNT(*) FROM jobs GROUP BY center, state"
        rows = await self._call(lambda db: db.execute(sql).fetchall())
        return {(r[0], r[1]): r[2] for r in rows}
