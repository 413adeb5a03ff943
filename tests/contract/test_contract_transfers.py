"""The TransferStore contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from gateway.data.models import TransferFile, TransferRecord
from gateway.data.store import TransferStore
from gateway.units import utcnow
from tests.contract.conftest import Backend


def transfer(owner: str = "alice", seconds: int = 0, **fields: object) -> TransferRecord:
    at = utcnow() + timedelta(seconds=seconds)
    return TransferRecord.model_validate(
        {
            "id": str(uuid.uuid4()),
            "owner": owner,
            "source": {"center": "centera", "path": "/home/alice/in"},
            "destination": {"center": "centerb", "path": "/scratch/alice/in"},
            "created_at": at,
            "updated_at": at,
            **fields,
        }
    )


async def test_a_saved_transfer_reads_back_with_its_update_time(
    transfer_store: TransferStore,
) -> None:
    record = transfer(files=[TransferFile(path="a", size=3, sha256="ab" * 32)], bytes_total=3)
    before = record.updated_at
    saved = await transfer_store.save(record)
    assert saved is record and record.updated_at >= before
    assert await transfer_store.get(record.id) == record
    assert await transfer_store.get(str(uuid.uuid4())) is None
    await transfer_store.ping()


async def test_saving_again_keeps_the_new_state(transfer_store: TransferStore) -> None:
    record = await transfer_store.save(transfer())
    for state in ("RUNNING", "COMPLETED"):
        record.state = state  # type: ignore[assignment]
        record.files_done += 1
        await transfer_store.save(record)
        assert await transfer_store.get(record.id) == record
    assert len(await transfer_store.list(None)) == 1


async def test_list_is_newest_first_per_owner_or_all(transfer_store: TransferStore) -> None:
    mine = [await transfer_store.save(transfer(seconds=i)) for i in range(3)]
    theirs = await transfer_store.save(transfer("bob", seconds=10))
    assert [r.id for r in await transfer_store.list("alice")] == [r.id for r in reversed(mine)]
    assert [r.id for r in await transfer_store.list(None)] == [
        theirs.id,
        *(r.id for r in reversed(mine)),
    ]
    assert [r.id for r in await transfer_store.list(None, limit=2)] == [theirs.id, mine[2].id]
    assert await transfer_store.list("carol") == []


async def test_unfinished_is_what_a_start_takes_up_oldest_first(
    transfer_store: TransferStore,
) -> None:
    states = ["QUEUED", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "QUEUED"]
    records = [
        await transfer_store.save(transfer(seconds=i, state=s)) for i, s in enumerate(states)
    ]
    assert [r.id for r in await transfer_store.unfinished()] == [
        records[0].id,
        records[1].id,
        records[5].id,
    ]
    records[1].state = "COMPLETED"
    await transfer_store.save(records[1])
    assert [r.id for r in await transfer_store.unfinished()] == [records[0].id, records[5].id]


async def test_transfers_outlive_the_store_object(transfer_backend: Backend) -> None:
    first = transfer_backend.make()
    await first.open()
    record = await first.save(transfer())
    await first.close()
    second = transfer_backend.make()
    await second.open()
    try:
        assert await second.get(record.id) == record
        assert [r.id for r in await second.unfinished()] == [record.id]
    finally:
        await second.close()
