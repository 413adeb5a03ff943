"""One SQLite database file, shared by every SQLite store (jobs, transfers,
evaluations, probes: each its tables, each its own connection).

Every call runs on one dedicated thread per store, so the event loop never
blocks on disk and each connection is used by a single thread. WAL mode and
synchronous=FULL: a record acknowledged to a client survives a crash of the
process or the machine.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from gateway.store.contract import StoreError
from gateway.store.sqlite import schema

T = TypeVar("T")


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
    """One connection to the gateway's database, used from one thread of its own.

    Opening applies the database's pending migrations (schema.py); a subclass runs
    every query through `_call`, which turns any sqlite3 error into a StoreError."""

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

    async def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await self._call(lambda db: db.execute(sql, args).fetchall())

    async def open(self) -> None:
        def open_db() -> None:
            db = connect(self.path)
            try:
                schema.ensure(db)
            except BaseException:
                db.close()
                raise
            self._db = db

        await asyncio.get_running_loop().run_in_executor(self._executor, open_db)

    async def close(self) -> None:
        def shut() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await asyncio.get_running_loop().run_in_executor(self._executor, shut)
        self._executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._call(lambda db: db.execute("SELECT 1").fetchone())
