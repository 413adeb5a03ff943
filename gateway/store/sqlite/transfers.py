"""Transfer records in SQLite, beside the jobs (the same database file)."""

from __future__ import annotations

from gateway.data.models import TRANSFER_TERMINAL, TransferRecord
from gateway.data.store import TransferStore
from gateway.store.sqlite.file import SQLiteFile
from gateway.units import utcnow


class SQLiteTransferStore(SQLiteFile, TransferStore):
    async def save(self, record: TransferRecord) -> TransferRecord:
        record.updated_at = utcnow()
        await self._query(
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
        rows = await self._query("SELECT doc FROM transfers WHERE id = ?", (transfer_id,))
        return TransferRecord.model_validate_json(rows[0]["doc"]) if rows else None

    async def list(self, owner: str | None, limit: int = 100) -> list[TransferRecord]:
        if owner is None:
            rows = await self._query(
                "SELECT doc FROM transfers ORDER BY created_at DESC LIMIT ?", (limit,)
            )
        else:
            rows = await self._query(
                "SELECT doc FROM transfers WHERE owner = ? ORDER BY created_at DESC LIMIT ?",
                (owner, limit),
            )
        return [TransferRecord.model_validate_json(r["doc"]) for r in rows]

    async def unfinished(self) -> list[TransferRecord]:
        marks = ", ".join("?" for _ in TRANSFER_TERMINAL)
        rows = await self._query(
            f"SELECT doc FROM transfers WHERE state NOT IN ({marks}) ORDER BY created_at",  # noqa: S608
            TRANSFER_TERMINAL,
        )
        return [TransferRecord.model_validate_json(r["doc"]) for r in rows]
