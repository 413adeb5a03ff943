"""The PostgreSQL schema: its versioned migrations (gateway/store/migrations.py) and
their record, the `schema_migrations` table.

Each migration runs in one transaction holding a transaction-level advisory lock
(`MIGRATION_LOCK`), together with the row recording it, so replicas that start at
once apply each migration once: the second waits for the first, then finds the
version recorded. Times are `timestamptz`, documents `jsonb` (the audit entries
`json`: kept as written), counters `bigint`; ids compare bytewise (`COLLATE "C"`),
so the order of a list does not depend on the database's locale.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import psycopg

from gateway.store.migrations import (
    AppliedMigration,
    Migration,
    Migrator,
    SchemaStatus,
    SchemaTooNew,
    check_order,
    pending,
)
from gateway.store.postgres.events import JOB_EVENTS_SQL
from gateway.store.postgres.leases import LEASES_SQL

if TYPE_CHECKING:
    from gateway.store.postgres.pool import PgPool

BACKEND = "postgres"

#: The key of the advisory lock migrations hold ("hpcfed" as a number).
MIGRATION_LOCK = 114831913280868

_V1 = """
CREATE TABLE jobs (
    id text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    center text NOT NULL,
    login text,
    state text NOT NULL,
    native_id text,
    native_state text,
    reason text,
    exit_code integer,
    idempotency_key text,
    elements jsonb NOT NULL DEFAULT '[]',
    staging jsonb NOT NULL DEFAULT '{}',
    placement jsonb,
    price jsonb,
    usage jsonb,
    started_at timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    submit_attempts integer NOT NULL DEFAULT 0,
    spec jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    submitted_at timestamptz,
    finished_at timestamptz
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (owner, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_owner_created ON jobs (owner, created_at DESC, id DESC);
CREATE INDEX jobs_created ON jobs (created_at DESC, id DESC);
CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE transfers (
    id text COLLATE "C" PRIMARY KEY,
    owner text NOT NULL,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX transfers_owner_created ON transfers (owner, created_at DESC);
CREATE INDEX transfers_created ON transfers (created_at DESC);
CREATE INDEX transfers_state ON transfers (state);

CREATE TABLE evaluations (
    id text COLLATE "C" PRIMARY KEY,
    center text NOT NULL,
    state text NOT NULL,
    created_at timestamptz NOT NULL,
    doc jsonb NOT NULL
);
CREATE INDEX evaluations_center_created ON evaluations (center, created_at DESC, id);
CREATE INDEX evaluations_state ON evaluations (state);

CREATE TABLE probes (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    center text NOT NULL,
    kind text NOT NULL,
    at timestamptz NOT NULL,
    ok boolean NOT NULL,
    latency_ms double precision,
    error text
);
CREATE INDEX probes_center_at ON probes (center, at);
CREATE INDEX probes_at ON probes (at);

CREATE TABLE audit_entries (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uid uuid NOT NULL UNIQUE,
    at timestamptz NOT NULL DEFAULT now(),
    action text,
    actor text,
    entry json NOT NULL
);
CREATE INDEX audit_entries_at ON audit_entries (at);

CREATE TABLE vault_entries (
    name text COLLATE "C" PRIMARY KEY,
    entry jsonb NOT NULL
);
CREATE TABLE vault_state (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    version bigint NOT NULL
);
INSERT INTO vault_state (only_row, version) VALUES (true, 0);
"""

#: Documents and evidence are `json`, kept as written: `jsonb` reorders keys and
#: refuses a NUL, which SQLite keeps.
_V4 = """
CREATE TABLE app_definitions (
    name text COLLATE "C" PRIMARY KEY,
    document json NOT NULL,
    updated_by text NOT NULL,
    updated_at timestamptz NOT NULL,
    revision bigint NOT NULL
);

CREATE TABLE app_verifications (
    center text COLLATE "C" NOT NULL,
    app text COLLATE "C" NOT NULL,
    version text COLLATE "C" NOT NULL,
    state text NOT NULL CHECK (state IN ('verified', 'failed')),
    checked_at timestamptz NOT NULL,
    evaluation_id text,
    message text NOT NULL,
    evidence json NOT NULL,
    PRIMARY KEY (center, app, version)
);
CREATE INDEX app_verifications_app ON app_verifications (app, version, center);
"""

_V5 = """
ALTER TABLE jobs ADD COLUMN application jsonb;
"""

_V6 = """
ALTER TABLE jobs ADD COLUMN task jsonb;
"""

MIGRATIONS: list[Migration] = [
    Migration(1, "jobs, transfers, evaluations, probes, audit and vault entries", _V1),
    Migration(2, "leases", LEASES_SQL),
    Migration(3, "job events", JOB_EVENTS_SQL),
    Migration(4, "application definitions and verifications", _V4),
    Migration(5, "what a job of an application runs", _V5),
    Migration(6, "the GA4GH TES task a job was created from", _V6),
]

check_order(MIGRATIONS)
KNOWN = MIGRATIONS[-1].version

_RECORD = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def _applied(conn: psycopg.AsyncConnection) -> list[AppliedMigration]:
    cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return []
    cur = await conn.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    return [AppliedMigration(v, n, at) for v, n, at in await cur.fetchall()]


def _status(applied: list[AppliedMigration]) -> SchemaStatus:
    return SchemaStatus(BACKEND, KNOWN, applied, pending(MIGRATIONS, applied))


class PgMigrator(Migrator):
    """The schema of the pool's database."""

    def __init__(self, pool: PgPool) -> None:
        self.pool = pool

    async def status(self) -> SchemaStatus:
        async with self.pool.connection() as conn:
            return _status(await _applied(conn))

    async def migrate(self) -> SchemaStatus:
        """One transaction per pending migration, each under the advisory lock; the
        status is read again under the lock each time (another replica may have
        applied the step meanwhile)."""
        while True:
            async with self.pool.transaction() as conn:
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
                await conn.execute(_RECORD)
                now = _status(await _applied(conn))
                if now.too_new:
                    raise SchemaTooNew(now)
                if not now.pending:
                    return now
                step = now.pending[0]
                await conn.execute(step.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (step.version, step.name),
                )
