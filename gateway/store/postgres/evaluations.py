"""Access evaluation records in PostgreSQL, beside the jobs (the same database)."""

from __future__ import annotations

from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.store import EvaluationStore
from gateway.store.postgres.pool import OnPool

_UPSERT = (
    "INSERT INTO evaluations (id, center, state, created_at, doc) "
    "VALUES (%s, %s, %s, %s, %s::jsonb) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc"
)


class PgEvaluationStore(OnPool, EvaluationStore):
    async def _docs(self, statement: str, args: tuple[object, ...] = ()) -> list[EvaluationRecord]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(statement, args)
            return [EvaluationRecord.model_validate_json(r[0]) for r in await cur.fetchall()]

    async def save(self, record: EvaluationRecord) -> EvaluationRecord:
        doc = record.model_dump_json()  # now: the record may change while the write waits
        args = (record.id, record.center, record.state, record.created_at, doc)
        async with self.pool.connection() as conn:
            await conn.execute(_UPSERT, args)
        return record

    async def get(self, evaluation_id: str) -> EvaluationRecord | None:
        found = await self._docs(
            "SELECT doc::text FROM evaluations WHERE id = %s", (evaluation_id,)
        )
        return found[0] if found else None

    async def list(self, center: str, limit: int = 100) -> list[EvaluationRecord]:
        return await self._docs(
            "SELECT doc::text FROM evaluations WHERE center = %s "
            "ORDER BY created_at DESC, id LIMIT %s",
            (center, limit),
        )

    async def latest_finished(self, center: str) -> EvaluationRecord | None:
        found = await self._docs(
            "SELECT doc::text FROM evaluations WHERE center = %s AND state IN ('DONE', 'ERROR') "
            "ORDER BY created_at DESC, id LIMIT 1",
            (center,),
        )
        return found[0] if found else None

    async def running(self) -> list[EvaluationRecord]:
        return await self._docs(
            "SELECT doc::text FROM evaluations WHERE state = 'RUNNING' ORDER BY created_at, id"
        )
