"""Access evaluation records in SQLite, beside the jobs (the same database file)."""

from __future__ import annotations

from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.store import EvaluationStore
from gateway.store.sqlite.file import SQLiteFile


class SQLiteEvaluationStore(SQLiteFile, EvaluationStore):
    async def save(self, record: EvaluationRecord) -> EvaluationRecord:
        doc = record.model_dump_json()  # here, on the caller's loop: the record may change later
        await self._query(
            "INSERT INTO evaluations (id, center, state, created_at, doc) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, doc = excluded.doc",
            (record.id, record.center, record.state, record.created_at.isoformat(), doc),
        )
        return record

    async def get(self, evaluation_id: str) -> EvaluationRecord | None:
        rows = await self._query("SELECT doc FROM evaluations WHERE id = ?", (evaluation_id,))
        return EvaluationRecord.model_validate_json(rows[0]["doc"]) if rows else None

    async def list(self, center: str, limit: int = 100) -> list[EvaluationRecord]:
        rows = await self._query(
            "SELECT doc FROM evaluations WHERE center = ? ORDER BY created_at DESC, id LIMIT ?",
            (center, limit),
        )
        return [EvaluationRecord.model_validate_json(r["doc"]) for r in rows]

    async def latest_finished(self, center: str) -> EvaluationRecord | None:
        rows = await self._query(
            "SELECT doc FROM evaluations WHERE center = ? AND state IN ('DONE', 'ERROR') "
            "ORDER BY created_at DESC, id LIMIT 1",
            (center,),
        )
        return EvaluationRecord.model_validate_json(rows[0]["doc"]) if rows else None

    async def running(self) -> list[EvaluationRecord]:
        rows = await self._query(
            "SELECT doc FROM evaluations WHERE state = 'RUNNING' ORDER BY created_at"
        )
        return [EvaluationRecord.model_validate_json(r["doc"]) for r in rows]
