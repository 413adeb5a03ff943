"""The job store's read path: records parsed from SQLite-built JSON, the in-memory
cache of records kept coherent with updates, and the API's JSON of a record."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import JobState
from gateway.jobs.models import (
    ElementRecord,
    JobRecord,
    JobSpec,
    JobUsage,
    PlacementDecision,
    Price,
    StagedFile,
    Staging,
)
from gateway.jobs.store import StoreError
from gateway.store.sqlite.jobs import SQLiteJobStore, _from_row
from gateway.units import utcnow


def _record(**fields: object) -> JobRecord:
    now = utcnow()
    base: dict[str, object] = {
        "id": str(uuid.uuid4()),
        "owner": "alice",
        "center": "local",
        "spec": JobSpec(command="true"),
        "state": JobState.SUBMITTING,
        "created_at": now,
        "updated_at": now,
    }
    base.update(fields)
    return JobRecord.model_validate(base)


def _rich() -> JobRecord:
    at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)
    price = Price(currency="CNY", core_hour=0.05, gpu_hour=1.25)
    return _record(
        login="alice",
        spec=JobSpec(command="echo", arguments=["héllo", 'quo"te'], environment={"A": "1"}),
        state=JobState.COMPLETED,
        native_id="7328",
        native_state="COMPLETED",
        reason="ok — done",
        exit_code=0,
        idempotency_key="key-1",
        elements=[ElementRecord(index=0, state=JobState.COMPLETED, exit_code=0, started_at=at)],
        staging=Staging(
            inputs=[StagedFile(index=0, path="/in", state="done", size=3)], collected=True
        ),
        placement=PlacementDecision(
            chosen="local", prefer=["cost"], explanation="cheapest", decided_at=at
        ),
        price=price,
        usage=JobUsage(cores=2, gpus=0, started_at=at, ended_at=at, price=price, cost=0.5),
        started_at=at,
        cancel_requested=True,
        submit_attempts=2,
        submitted_at=at,
        finished_at=at,
    )


@pytest.fixture
async def store(tmp_path: Path):
    s = SQLiteJobStore(tmp_path / "jobs.db")
    await s.open()
    yield s
    await s.close()


def _rows(path: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM jobs").fetchall()
    finally:
        db.close()


async def test_json_read_equals_field_by_field_read(store: SQLiteJobStore) -> None:
    rich, plain = _rich(), _record()
    for record in (rich, plain):
        await store.insert(record)
    by_fields = {row["id"]: _from_row(row) for row in _rows(store.path)}
    for record in (rich, plain):
        read = await store.get(record.id)
        assert read == by_fields[record.id] == record
        assert read is not None
        assert read.model_fields_set == by_fields[record.id].model_fields_set
        assert read.spec.model_fields_set == by_fields[record.id].spec.model_fields_set
    page = await store.list(owner="alice")
    assert {j.id: j for j in page.jobs} == by_fields
    assert [j.id for j in await store.finished(owner=None)] == [rich.id]
    assert [j.id for j in await store.active()] == [plain.id]


async def test_update_then_read_gives_the_new_record(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    assert (await store.get(record.id)) == record  # now cached
    updated = await store.update(record.id, state=JobState.QUEUED, native_id="42")
    read = await store.get(record.id)
    assert read == updated
    assert read is not None and (read.state, read.native_id) == (JobState.QUEUED, "42")
    again = await store.update(record.id, state=JobState.RUNNING)
    assert await store.get(record.id) == again
    listed = await store.list(owner=None)
    assert listed.jobs == [again]


async def test_read_racing_an_update_never_leaves_the_old_record(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED):
        # The read is issued first and so runs first, returning the old record, but
        # completes while the update is in flight: it must not fill the cache.
        read = asyncio.ensure_future(store.get(record.id))
        listing = asyncio.ensure_future(store.list(owner=None))
        update = asyncio.ensure_future(store.update(record.id, state=state))
        await asyncio.gather(read, listing)
        if not update.done():
            # Until the update is done, nothing read before it may be cached.
            assert record.id not in store._records
        await update
        after = await store.get(record.id)
        assert after is not None and after.state is state
        assert after == update.result()
        assert (await store.list(owner=None)).jobs == [after]


async def test_concurrent_updates_leave_the_last_one(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    await store.get(record.id)
    results = await asyncio.gather(
        store.update(record.id, native_id="1"),
        store.update(record.id, native_id="2"),
        store.update(record.id, native_id="3"),
    )
    read = await store.get(record.id)
    assert read == results[-1]
    assert read is not None and read.native_id == "3"


async def test_records_read_are_independent_copies(store: SQLiteJobStore) -> None:
    record = _record()
    await store.insert(record)
    first = await store.get(record.id)
    assert first is not None
    first.state = JobState.FAILED
    first.spec.arguments.append("changed")
    second = await store.get(record.id)
    assert second == record


async def test_failed_update_leaves_no_entry(store: SQLiteJobStore) -> None:
    with pytest.raises(StoreError):
        await store.update(str(uuid.uuid4()), state=JobState.QUEUED)
    record = _record()
    await store.insert(record)
    assert await store.get(record.id) == record


async def test_cache_is_bounded(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db", cache_size=2)
    await store.open()
    try:
        records = [_record() for _ in range(4)]
        for record in records:
            await store.insert(record)
            assert await store.get(record.id) == record
        assert len(store._records) == 2
        assert list(store._records) == [records[2].id, records[3].id]
        for record in records:  # evicted ones are read from the database
            assert await store.get(record.id) == record
    finally:
        await store.close()


async def test_cache_can_be_turned_off(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db", cache_size=0)
    await store.open()
    try:
        record = _record()
        await store.insert(record)
        assert await store.get(record.id) == record
        updated = await store.update(record.id, state=JobState.QUEUED)
        assert await store.get(record.id) == updated
        assert not store._records
    finally:
        await store.close()


def test_public_json_is_public() -> None:
    for record in (_rich(), _record(), _record(state=JobState.RUNNING)):
        body = record.public_json()
        assert isinstance(body, bytes)
        parsed = json.loads(body)
        assert parsed == record.public()
        assert list(parsed) == list(record.public())
        assert "submit_attempts" not in parsed
        assert parsed["terminal"] is record.state.is_terminal
