"""The SQLite database's schema: its versioned migrations (gateway/store/migrations.py)
and their record, the `schema_migrations` table.

A database made before versioned migrations has the tables and no record: the
first migration adopts it, adding the columns such a database may lack, then
records version 1. Migrations run under `BEGIN IMMEDIATE`, so two processes
opening one file apply each once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from gateway.store.contract import StoreError
from gateway.store.migrations import (
    AppliedMigration,
    Migration,
    Migrator,
    SchemaStatus,
    SchemaTooNew,
    check_order,
    pending,
)

BACKEND = "sqlite"

_V1 = """
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

CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_owner_created ON transfers (owner, created_at DESC);

CREATE TABLE IF NOT EXISTS evaluations (
    id TEXT PRIMARY KEY,
    center TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_center_created
    ON evaluations (center, created_at DESC);
CREATE INDEX IF NOT EXISTS evaluations_state ON evaluations (state);

CREATE TABLE IF NOT EXISTS probes (
    center TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    ok INTEGER NOT NULL,
    latency_ms REAL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS probes_center_at ON probes (center, at);
"""

_V2 = """
CREATE TABLE app_definitions (
    name TEXT PRIMARY KEY,
    document TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    revision INTEGER NOT NULL
);

CREATE TABLE app_verifications (
    center TEXT NOT NULL,
    app TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('verified', 'failed')),
    checked_at TEXT NOT NULL,
    evaluation_id TEXT,
    message TEXT NOT NULL,
    evidence TEXT NOT NULL,
    PRIMARY KEY (center, app, version)
);
CREATE INDEX app_verifications_app ON app_verifications (app, version, center);
"""

_V3 = """
ALTER TABLE jobs ADD COLUMN application TEXT;
"""

_V4 = """
ALTER TABLE jobs ADD COLUMN task TEXT;
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "jobs, transfers, evaluations and probes", _V1),
    Migration(2, "application definitions and verifications", _V2),
    Migration(3, "what a job of an application runs", _V3),
    Migration(4, "the GA4GH TES task a job was created from", _V4),
]
check_order(MIGRATIONS)
KNOWN = MIGRATIONS[-1].version

_RECORD = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at TEXT NOT NULL
)
"""

#: Columns of `jobs` added before versioned migrations: name -> definition, for the
#: databases of those releases, which migration 1 adopts.
_ADDED_JOB_COLUMNS = {
    "elements": "TEXT NOT NULL DEFAULT '[]'",
    "login": "TEXT",
    "staging": "TEXT NOT NULL DEFAULT '{}'",
    "placement": "TEXT",
    "price": "TEXT",
    "usage": "TEXT",
    "started_at": "TEXT",
}


def _statements(sql: str) -> list[str]:
    return [s.strip() for s in sql.split(";") if s.strip()]


def _applied(db: sqlite3.Connection) -> list[AppliedMigration]:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [
        AppliedMigration(r[0], r[1], datetime.fromisoformat(r[2]))
        for r in db.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    ]


def status(db: sqlite3.Connection) -> SchemaStatus:
    applied = _applied(db)
    return SchemaStatus(BACKEND, KNOWN, applied, pending(MIGRATIONS, applied))


def _adopt(db: sqlite3.Connection) -> None:
    """Bring a `jobs` table of a release before migrations to migration 1's columns."""
    existing = {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
    if existing:
        for column, definition in _ADDED_JOB_COLUMNS.items():
            if column not in existing:
                db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")


def migrate(db: sqlite3.Connection) -> SchemaStatus:
    """Apply what is pending, in one transaction per migration; SchemaTooNew first."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(_RECORD)
        now = status(db)
        if now.too_new:
            raise SchemaTooNew(now)
        for step in now.pending:
            if step.version == 1:
                _adopt(db)
            for statement in _statements(step.sql):
                db.execute(statement)
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (step.version, step.name, datetime.now(UTC).isoformat()),
            )
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return status(db)


def ensure(db: sqlite3.Connection) -> None:
    """What a store's open does: migrate when something is pending (a start with
    `store.migrate: manual` has checked before, through `SQLiteMigrator.ensure`)."""
    now = status(db)
    if now.too_new:
        raise SchemaTooNew(now)
    if now.pending:
        migrate(db)


class SQLiteMigrator(Migrator):
    """The schema of one database file, each call on a connection of its own."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def _run(self, fn: Callable[[sqlite3.Connection], SchemaStatus]) -> SchemaStatus:
        from gateway.store.sqlite.file import connect  # it imports this module

        def run() -> SchemaStatus:
            try:
                db = connect(self.path)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            try:
                return fn(db)
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc
            finally:
                db.close()

        return await asyncio.to_thread(run)

    async def status(self) -> SchemaStatus:
        return await self._run(status)

    async def migrate(self) -> SchemaStatus:
        return await self._run(migrate)
