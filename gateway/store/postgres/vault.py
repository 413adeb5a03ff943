"""The vault's encrypted entries in PostgreSQL (`vault_entries`), shared by every
replica and the CLI; the signing keyring keeps its keys among them.

A change locks the one row of `vault_state` (SELECT ... FOR UPDATE): every writer
of any process waits for the one before, and reads what it left. The row's
`version` counts the changes and is the stamp: a key rotated on one replica
changes the stamp every other replica's keyring checks, which reloads its public
keys. The stamp is read at most once per `stamp_interval` seconds (the keyring asks
for each token it verifies); a change made through this object is seen at once.

The contract is blocking, so this holds one blocking connection of its own, under
a lock, made again when it breaks.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from gateway.identity.vault import VaultEntries, VaultError
from gateway.store.contract import StoreError, StoreUnavailable
from gateway.store.postgres.pool import connect, store_error

T = TypeVar("T")

#: How long a stamp read from the server is taken as current.
STAMP_INTERVAL = 1.0


class VaultUnavailable(VaultError, StoreUnavailable):
    """The vault's entries cannot be reached now: a VaultError to the vault's users, and
    the store's unavailability to the API (503 store_unavailable, never a 500)."""


class PgVaultEntries(VaultEntries):
    def __init__(self, dsn: str, *, stamp_interval: float = STAMP_INTERVAL) -> None:
        self.dsn = dsn
        self.stamp_interval = stamp_interval
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._stamp: int | None = None
        self._stamp_read = float("-inf")  # monotonic time of the last read

    # ------------------------------------------------------------ the connection

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if self._conn is None:
            try:
                self._conn = connect(self.dsn)
            except StoreUnavailable as exc:
                raise VaultUnavailable(f"vault: {exc}") from None
            except StoreError as exc:
                raise VaultError(f"vault: {exc}") from None
        return self._conn

    def _failed(self, exc: psycopg.Error) -> VaultError:
        if isinstance(exc, psycopg.OperationalError):
            self._drop()
        error = store_error(exc)
        if isinstance(error, StoreUnavailable):
            return VaultUnavailable(f"vault: {error}")
        return VaultError(f"vault: {error}")

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _reading(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """fn on the connection, once more on a fresh one if it broke (reads only)."""
        try:
            return fn(self._connection())
        except psycopg.OperationalError:
            self._drop()
        try:
            return fn(self._connection())
        except psycopg.Error as exc:
            raise self._failed(exc) from None

    def close(self) -> None:
        with self._lock:
            self._drop()

    # ------------------------------------------------------------ the contract

    @staticmethod
    def _entries(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
        return dict(conn.execute("SELECT name, entry FROM vault_entries ORDER BY name").fetchall())

    def read(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return self._reading(self._entries)

    def _read_stamp(self, conn: psycopg.Connection[Any]) -> int | None:
        row = conn.execute("SELECT version FROM vault_state").fetchone()
        version = row[0] if row else 0
        self._stamp = version or None
        self._stamp_read = time.monotonic()
        return self._stamp

    def stamp(self) -> int | None:
        with self._lock:
            if time.monotonic() - self._stamp_read < self.stamp_interval:
                return self._stamp
            return self._reading(self._read_stamp)

    @contextlib.contextmanager
    def change(self) -> Iterator[dict[str, dict[str, Any]]]:
        with self._lock:
            # Changes are rare: a round trip first finds a connection the server
            # dropped (restarted) before the change begins, rather than failing it.
            self._reading(lambda conn: conn.execute("SELECT 1"))
            conn = self._connection()
            try:
                with conn.transaction():
                    conn.execute("SELECT version FROM vault_state FOR UPDATE")
                    before = self._entries(conn)
                    entries = json.loads(json.dumps(before))
                    yield entries
                    self._store(conn, before, entries)
                    self._read_stamp(conn)
            except psycopg.Error as exc:
                raise self._failed(exc) from None

    @staticmethod
    def _store(
        conn: psycopg.Connection[Any],
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
    ) -> None:
        gone = [name for name in before if name not in after]
        changed = [(n, Jsonb(e)) for n, e in after.items() if before.get(n) != e]
        if not gone and not changed:
            return
        with conn.cursor() as cur:
            if gone:
                cur.execute("DELETE FROM vault_entries WHERE name = ANY(%s)", (gone,))
            if changed:
                cur.executemany(
                    "INSERT INTO vault_entries (name, entry) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET entry = excluded.entry",
                    changed,
                )
            cur.execute("UPDATE vault_state SET version = version + 1")
