"""Application definitions and canary verifications in PostgreSQL, beside the jobs
(the same database). Documents and evidence are `json`, kept as written (`jsonb`
would reorder their keys and refuse a NUL)."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from gateway.apps.store import (
    AppStore,
    StoredDefinition,
    Verification,
    dump_json,
    plain_text,
)
from gateway.store.postgres.pool import OnPool
from gateway.units import utcnow

_PUT = (
    "INSERT INTO app_definitions (name, document, updated_by, updated_at, revision) "
    "VALUES (%s, %s::json, %s, %s, 1) ON CONFLICT (name) DO UPDATE SET "
    "document = excluded.document, updated_by = excluded.updated_by, "
    "updated_at = excluded.updated_at, revision = app_definitions.revision + 1 "
    "RETURNING revision"
)
_DEFINITION = "SELECT name, document::text, updated_by, updated_at, revision FROM app_definitions"
_RECORD = (
    "INSERT INTO app_verifications (center, app, version, state, checked_at, evaluation_id, "
    "message, evidence) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::json) "
    "ON CONFLICT (center, app, version) DO UPDATE SET state = excluded.state, "
    "checked_at = excluded.checked_at, evaluation_id = excluded.evaluation_id, "
    "message = excluded.message, evidence = excluded.evidence"
)
_VERIFICATION = (
    "SELECT center, app, version, state, checked_at, evaluation_id, message, evidence::text "
    "FROM app_verifications"
)
_VERIFICATIONS = (
    f"{_VERIFICATION} WHERE (%(center)s::text IS NULL OR center = %(center)s) "
    "AND (%(app)s::text IS NULL OR app = %(app)s) ORDER BY app, version, center"
)
_FORGET = (
    "DELETE FROM app_verifications AS v WHERE v.center = %s AND NOT EXISTS ("
    "SELECT 1 FROM unnest(%s::text[], %s::text[]) AS k(app, version) "
    "WHERE k.app = v.app AND k.version = v.version)"
)


def _definition(row: tuple[Any, ...]) -> StoredDefinition:
    name, document, updated_by, updated_at, revision = row
    return StoredDefinition(name, json.loads(document), updated_by, updated_at, revision)


def _verification(row: tuple[Any, ...]) -> Verification:
    center, app, version, state, checked_at, evaluation_id, message, evidence = row
    return Verification(
        center=center,
        app=app,
        version=version,
        state=state,
        checked_at=checked_at,
        evaluation_id=evaluation_id,
        message=message,
        evidence=json.loads(evidence),
    )


class PgAppStore(OnPool, AppStore):
    async def put_definition(
        self, name: str, document: dict[str, Any], updated_by: str
    ) -> StoredDefinition:
        text = dump_json(document, "document")  # now: the caller may change it later
        now = utcnow()
        async with self.pool.connection() as conn:
            cur = await conn.execute(_PUT, (name, text, updated_by, now))
            row = await cur.fetchone()
        assert row is not None
        return StoredDefinition(name, json.loads(text), updated_by, now, row[0])

    async def get_definition(self, name: str) -> StoredDefinition | None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"{_DEFINITION} WHERE name = %s", (name,))
            row = await cur.fetchone()
        return _definition(row) if row else None

    async def list_definitions(self) -> list[StoredDefinition]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(f"{_DEFINITION} ORDER BY name")
            return [_definition(r) for r in await cur.fetchall()]

    async def delete_definition(self, name: str) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute("DELETE FROM app_definitions WHERE name = %s", (name,))
            return cur.rowcount > 0

    async def record_verification(self, verification: Verification) -> None:
        v = verification
        args = (
            v.center,
            v.app,
            v.version,
            v.state,
            v.checked_at,
            v.evaluation_id,
            plain_text(v.message),
            dump_json(v.evidence, "evidence"),
        )
        async with self.pool.connection() as conn:
            await conn.execute(_RECORD, args)

    async def verifications(
        self, *, center: str | None = None, app: str | None = None
    ) -> list[Verification]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_VERIFICATIONS, {"center": center, "app": app})
            return [_verification(r) for r in await cur.fetchall()]

    async def forget_verifications(self, center: str, keep: Collection[tuple[str, str]]) -> int:
        kept = sorted({(app, version) for app, version in keep})
        apps = [app for app, _ in kept]
        versions = [version for _, version in kept]
        async with self.pool.connection() as conn:
            cur = await conn.execute(_FORGET, (center, apps, versions))
            return cur.rowcount
