"""Transfer records in SQLite, beside the jobs (the same database file)."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gateway.models import TRANSFER_TERMINAL, TransferRecord, utcnow
from gateway.store.base import StoreError
from gateway.store.sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfers (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_owner_created ON transfers (owner, created_at DESC);
"""


class SQLiteTransferStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-transfers")
        self._db: sqlite3.Connection | None = None

    async def _call(self, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        def run() -> list[sqlite3.Row]:
            if self._db is None:
                raise StoreError("store is not open")
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> None:
        def open_db() -> None:
            db = connect(self.path)
            db.executescript(_SCHEMA)
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, open_db)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    async def save(self, record: TransferRecord) -> TransferRecord:
        record.updated_at = utcnow()
        await self._call(
            "INSERT INTO transfers (id, owner, state, created_at, doc) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
            (
                record.id,
                record.owner,
                record.state,
                record.created_at.isoformat(),
                record.model_dump_json(),
            ),
        )
        return record

    async def get(self, transfer_id: str) -> TransferRecord | None:
        rows = await self._call("SELECT doc FROM transfers WHERE id = ?", (transfer_id,))
        return TransferRecord.model_validate_json(rows[0]["doc"]) if rows else None

    async def list(self, owner: str | None, limit: int = 100) -> list[TransferRecord]:
        if owner is None:
            rows = await self._call(
                "SELECT doc FROM transfers ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._call(
                "SELECT doc FROM transfers WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
                (owner, limit),
            )
        return [TransferRecord.model_validate_json(r["doc"]) for r in rows]

    async def unfinished(self) -> list[TransferRecord]:
        marks = ", ".join("?" for _ in TRANSFER_TERMINAL)
        rows = await self._call(
            f"SELECT doc FROM transfers WHERE state NOT IN ({marks}) ORDER BY created_at",  # noqa: S608
            TRANSFER_TERMINAL,
        )
        return [TransferRecord.model_validate_json(r["doc"]) for r in rows]
