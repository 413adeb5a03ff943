"""Transfer records in PostgreSQL, beside the jobs (the same database)."""

from __future__ import annotations

from gateway.data.models import TRANSFER_TERMINAL, TransferRecord
from gateway.data.store import TransferStore
from gateway.store.postgres.pool import OnPool
from gateway.units import utcnow

_UPSERT = (
    "INSERT INTO transfers (id, owner, state, created_at, doc) VALUES (%s, %s, %s, %s, %s::jsonb) "
    "ON CONFLICT (id) DO UPDATE SET state = excluded.state, doc = excluded.doc"
)


class PgTransferStore(OnPool, TransferStore):
    async def _docs(self, statement: str, args: tuple[object, ...] = ()) -> list[TransferRecord]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(statement, args)
            return [TransferRecord.model_validate_json(r[0]) for r in await cur.fetchall()]

    async def save(self, record: TransferRecord) -> TransferRecord:
        record.updated_at = utcnow()
        args = (record.id, record.owner, record.state, record.created_at, record.model_dump_json())
        async with self.pool.connection() as conn:
            await conn.execute(_UPSERT, args)
        return record

    async def get(self, transfer_id: str) -> TransferRecord | None:
        found = await self._docs("SELECT doc::text FROM transfers WHERE id = %s", (transfer_id,))
        return found[0] if found else None

    async def list(self, owner: str | None, limit: int = 100) -> list[TransferRecord]:
        if owner is None:
            return await self._docs(
                "SELECT doc::text FROM transfers ORDER BY created_at DESC, id DESC LIMIT %s",
                (limit,),
            )
        return await self._docs(
            "SELECT doc::text FROM transfers WHERE owner = %s "
            "ORDER BY created_at DESC, id DESC LIMIT %s",
            (owner, limit),
        )

    async def unfinished(self) -> list[TransferRecord]:
        return await self._docs(
            "SELECT doc::text FROM transfers WHERE state <> ALL(%s) ORDER BY created_at, id",
            (list(TRANSFER_TERMINAL),),
        )
