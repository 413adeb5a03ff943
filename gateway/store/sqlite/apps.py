"""Application definitions and canary verifications in SQLite, beside the jobs (the
same database file). Documents and evidence are kept as JSON text, as written."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import datetime
from typing import Any

from gateway.apps.store import (
    AppStore,
    StoredDefinition,
    Verification,
    dump_json,
    plain_text,
)
from gateway.store.sqlite.file import SQLiteFile
from gateway.units import utcnow

_PUT = (
    "INSERT INTO app_definitions (name, document, updated_by, updated_at, revision) "
    "VALUES (?, ?, ?, ?, 1) ON CONFLICT (name) DO UPDATE SET "
    "document = excluded.document, updated_by = excluded.updated_by, "
    "updated_at = excluded.updated_at, revision = app_definitions.revision + 1 "
    "RETURNING revision"
)
_DEFINITION = "SELECT name, document, updated_by, updated_at, revision FROM app_definitions"
_RECORD = (
    "INSERT INTO app_verifications (center, app, version, state, checked_at, evaluation_id, "
    "message, evidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (center, app, version) DO UPDATE SET state = excluded.state, "
    "checked_at = excluded.checked_at, evaluation_id = excluded.evaluation_id, "
    "message = excluded.message, evidence = excluded.evidence"
)
_VERIFICATION = (
    "SELECT center, app, version, state, checked_at, evaluation_id, message, evidence "
    "FROM app_verifications"
)

_VERIFICATIONS = (
    f"{_VERIFICATION} WHERE (:center IS NULL OR center = :center) "
    "AND (:app IS NULL OR app = :app) ORDER BY app, version, center"
)


def _definition(row: sqlite3.Row) -> StoredDefinition:
    return StoredDefinition(
        name=row["name"],
        document=json.loads(row["document"]),
        updated_by=row["updated_by"],
        updated_at=datetime.fromisoformat(row["updated_at"]),
        revision=row["revision"],
    )


def _verification(row: sqlite3.Row) -> Verification:
    return Verification(
        center=row["center"],
        app=row["app"],
        version=row["version"],
        state=row["state"],
        checked_at=datetime.fromisoformat(row["checked_at"]),
        evaluation_id=row["evaluation_id"],
        message=row["message"],
        evidence=json.loads(row["evidence"]),
    )


class SQLiteAppStore(SQLiteFile, AppStore):
    async def put_definition(
        self, name: str, document: dict[str, Any], updated_by: str
    ) -> StoredDefinition:
        text = dump_json(document, "document")  # now: the caller may change it later
        now = utcnow()
        rows = await self._query(_PUT, (name, text, updated_by, now.isoformat()))
        return StoredDefinition(name, json.loads(text), updated_by, now, rows[0]["revision"])

    async def get_definition(self, name: str) -> StoredDefinition | None:
        rows = await self._query(f"{_DEFINITION} WHERE name = ?", (name,))
        return _definition(rows[0]) if rows else None

    async def list_definitions(self) -> list[StoredDefinition]:
        rows = await self._query(f"{_DEFINITION} ORDER BY name")
        return [_definition(r) for r in rows]

    async def delete_definition(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM app_definitions WHERE name = ?", (name,)).rowcount > 0

        return await self._call(delete)

    async def record_verification(self, verification: Verification) -> None:
        v = verification
        args = (
            v.center,
            v.app,
            v.version,
            v.state,
            v.checked_at.isoformat(),
            v.evaluation_id,
            plain_text(v.message),
            dump_json(v.evidence, "evidence"),
        )
        await self._query(_RECORD, args)

    async def verifications(
        self, *, center: str | None = None, app: str | None = None
    ) -> list[Verification]:
        names = {"center": center, "app": app}
        rows = await self._call(lambda db: db.execute(_VERIFICATIONS, names).fetchall())
        return [_verification(r) for r in rows]

    async def forget_verifications(self, center: str, keep: Collection[tuple[str, str]]) -> int:
        kept = {(app, version) for app, version in keep}

        def forget(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                held = db.execute(
                    "SELECT app, version FROM app_verifications WHERE center = ?", (center,)
                ).fetchall()
                gone = [(center, r[0], r[1]) for r in held if (r[0], r[1]) not in kept]
                db.executemany(
                    "DELETE FROM app_verifications WHERE center = ? AND app = ? AND version = ?",
                    gone,
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            return len(gone)

        return await self._call(forget)
