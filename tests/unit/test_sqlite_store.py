"""The SQLite job store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from gateway.models import JobRecord, JobSpec, JobState, utcnow
from gateway.store import SQLiteJobStore
from gateway.store.base import DuplicateIdempotencyKey


def _record(owner: str = "alice", key: str | None = None) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=str(uuid.uuid4()),
        owner=owner,
        center="local",
        spec=JobSpec(command="true"),
        state=JobState.SUBMITTING,
        idempotency_key=key,
        created_at=now,
        updated_at=now,
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteJobStore(tmp_path / "jobs.db")
    await s.open()
    yield s
    await s.close()


async def test_inserted_record_reads_back_equal(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    assert await store.get(record.id) == record


async def test_update_changes_fields_and_time(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    updated = await store.update(record.id, state=JobState.QUEUED, native_id="42")
    assert (updated.state, updated.native_id) == (JobState.QUEUED, "42")
    assert updated.updated_at >= record.updated_at
    with pytest.raises(ValueError):
        await store.update(record.id, owner="mallory")


async def test_reused_idempotency_key_returns_the_existing_record(store: SQLiteJobStore) -> None:
    first = _record(key="k1")
    await store.insert(first)
    with pytest.raises(DuplicateIdempotencyKey) as dup:
        await store.insert(_record(key="k1"))
    assert dup.value.existing.id == first.id
    await store.insert(_record(owner="bob", key="k1"))  # keys are per owner


async def test_active_lists_only_non_terminal_jobs(store: SQLiteJobStore) -> None:
    running, done = _record(), _record()
    await store.insert(running)
    await store.insert(done)
    await store.update(done.id, state=JobState.COMPLETED)
    assert [r.id for r in await store.active()] == [running.id]


async def test_records_survive_reopening(tmp_path: Path) -> None:
    record = _record()
    first = SQLiteJobStore(tmp_path / "j.db")
    await first.open()
    await first.insert(record)
    await first.close()
    second = SQLiteJobStore(tmp_path / "j.db")
    await second.open()
    assert await second.get(record.id) == record
    await second.close()


async def test_list_filters_by_owner_and_state(store: SQLiteJobStore) -> None:
    mine, theirs = _record(), _record(owner="bob")
    await store.insert(mine)
    await store.insert(theirs)
    assert [r.id for r in (await store.list(owner="alice")).jobs] == [mine.id]
    assert len((await store.list(owner=None)).jobs) == 2
    assert (await store.list(owner="alice", states=[JobState.RUNNING])).jobs == []
