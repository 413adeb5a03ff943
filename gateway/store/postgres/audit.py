"""The audit trail in PostgreSQL: every replica's and the CLI's entries in one table,
in the order they were kept (`audit_entries`, its identity column).

The contract is blocking (the audit middleware and the CLI call it in line), so
the trail holds one blocking connection of its own, under a lock, made again when
it breaks. Each entry is committed before `append` returns. An append carries a
unique id of its own, so one whose outcome a broken connection left unknown is
sent once more without being kept twice.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from typing import Any

import psycopg

from gateway.identity.audit import AuditError, AuditTrail
from gateway.store.contract import StoreError
from gateway.store.postgres.pool import connect, store_error

log = logging.getLogger("hpcfed.audit")

_INSERT = (
    "INSERT INTO audit_entries (uid, action, actor, entry) VALUES (%s, %s, %s, %s::json) "
    "ON CONFLICT (uid) DO NOTHING"
)


class PgAuditTrail(AuditTrail):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is not None and (self._conn.closed or self._conn.broken):
            self._conn = None
        if self._conn is None:
            self._conn = connect(self.dsn)
        return self._conn

    def _run(self, statement: str, args: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Run on the trail's connection, once more on a fresh one if it broke."""
        for attempt in (1, 2):
            try:
                conn = self._connection()
                cur = conn.execute(statement, args)
                return cur.fetchall() if cur.description else []
            except psycopg.OperationalError as exc:
                self._drop()
                if attempt == 2:
                    raise store_error(exc) from exc
            except psycopg.Error as exc:
                raise store_error(exc) from exc
        raise AssertionError("unreachable")

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def append(self, entry: dict[str, object]) -> None:
        action = entry.get("action")
        actor = entry.get("actor")
        # ensure_ascii: the text holds no NUL the server could refuse.
        text = json.dumps(entry, separators=(",", ":"))
        args = (
            uuid.uuid4(),
            str(action) if action is not None else None,
            str(actor) if actor is not None else None,
            text,
        )
        with self._lock:
            try:
                if self._closed:
                    raise StoreError("the audit trail is closed")
                self._run(_INSERT, args)
            except StoreError as exc:
                # The action only, never the details: they may be what failed.
                log.error("cannot keep the audit entry for %s: %s", action, exc)
                raise AuditError(f"cannot keep the audit entry: {exc}") from exc

    def entries(self) -> list[dict[str, object]]:
        with self._lock:
            try:
                if self._closed:
                    raise StoreError("the audit trail is closed")
                found = self._run("SELECT id, entry::text FROM audit_entries ORDER BY id")
            except StoreError as exc:
                raise AuditError(f"cannot read the audit entries: {exc}") from exc
        out: list[dict[str, object]] = []
        for number, text in found:
            try:
                entry = json.loads(text)
            except ValueError as exc:
                raise ValueError(f"audit entry {number}: not valid JSON: {exc}") from None
            if not isinstance(entry, dict):
                raise ValueError(f"audit entry {number}: not a JSON object")
            out.append(entry)
        return out

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()
