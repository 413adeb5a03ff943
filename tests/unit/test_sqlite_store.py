"""What only the SQLite job store does: its table, upgraded in place from older
databases. What every job store does is tests/contract/test_contract_jobs.py."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from adapters.base import JobState
from gateway.jobs.store import JobQuery
from gateway.store.sqlite.jobs import SQLiteJobStore


async def test_a_database_from_before_array_elements_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, center TEXT NOT NULL,"
        " state TEXT NOT NULL, native_id TEXT, native_state TEXT, reason TEXT,"
        " exit_code INTEGER, idempotency_key TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,"
        " submit_attempts INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL, created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL, submitted_at TEXT, finished_at TEXT)"
    )
    old.execute(
        "INSERT INTO jobs (id, owner, center, state, spec, created_at, updated_at) VALUES"
        " ('00000000-0000-4000-8000-000000000000', 'alice', 'local', 'QUEUED',"
        " '{\"command\": \"true\"}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
    )
    old.commit()
    old.close()
    store = SQLiteJobStore(path)
    await store.open()
    try:
        kept = await store.get("00000000-0000-4000-8000-000000000000")
        assert kept is not None and kept.elements == [] and kept.state is JobState.QUEUED
        assert (await store.list(JobQuery(owner="alice"))).jobs == [kept]
        columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")}
        assert {"elements", "login", "staging", "placement", "price", "usage"} <= columns
    finally:
        await store.close()
