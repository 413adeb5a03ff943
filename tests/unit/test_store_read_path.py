"""The SQLite job store's read path: records parsed from SQLite-built JSON, the
in-memory cache of records kept coherent with updates, and the API's JSON of a
record. What every job store does is tests/contract/test_contract_jobs.py."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from adapters.base import JobState
from gateway.jobs.store import JobQuery, StoreError
from gateway.store.sqlite.job_rows import from_row
from gateway.store.sqlite.jobs import SQLiteJobStore
from tests.contract.records import job, rich


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
    full, plain = rich(), job()
    for record in (full, plain):
        await store.insert(record)
    by_fields = {row["id"]: from_row(row) for row in _rows(store.path)}
    for record in (full, plain):
        read = await store.get(record.id)
        assert read == by_fields[record.id] == record
        assert read is not None
        assert read.model_fields_set == by_fields[record.id].model_fields_set
        assert read.spec.model_fields_set == by_fields[record.id].spec.model_fields_set
    page = await store.list(JobQuery(owner="alice"))
    assert {j.id: j for j in page.jobs} == by_fields
    assert [j.id for j in await store.finished(owner=None)] == [full.id]
    assert [j.id for j in await store.active()] == [plain.id]


async def test_read_racing_an_update_never_leaves_the_oldjob(store: SQLiteJobStore) -> None:
    record = job()
    await store.insert(record)
    for state in (JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED):
        # The read is issued first and so runs first, returning the old record, but
        # completes while the update is in flight: it must not fill the cache.
        read = asyncio.ensure_future(store.get(record.id))
        listing = asyncio.ensure_future(store.list(JobQuery(owner=None)))
        update = asyncio.ensure_future(store.update(record.id, state=state))
        await asyncio.gather(read, listing)
        if not update.done():
            # Until the update is done, nothing read before it may be cached.
            assert record.id not in store._records
        await update
        after = await store.get(record.id)
        assert after is not None and after.state is state
        assert after == update.result()
        assert (await store.list(JobQuery(owner=None))).jobs == [after]


async def test_failed_update_leaves_no_entry(store: SQLiteJobStore) -> None:
    with pytest.raises(StoreError):
        await store.update(str(uuid.uuid4()), state=JobState.QUEUED)
    record = job()
    await store.insert(record)
    assert await store.get(record.id) == record


async def test_cache_is_bounded(tmp_path: Path) -> None:
    store = SQLiteJobStore(tmp_path / "jobs.db", cache_size=2)
    await store.open()
    try:
        records = [job() for _ in range(4)]
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
        record = job()
        await store.insert(record)
        assert await store.get(record.id) == record
        updated = await store.update(record.id, state=JobState.QUEUED)
        assert await store.get(record.id) == updated
        assert not store._records
    finally:
        await store.close()


def test_public_json_is_public() -> None:
    for record in (rich(), job(), job(state=JobState.RUNNING)):
        body = record.public_json()
        assert isinstance(body, bytes)
        parsed = json.loads(body)
        assert parsed == record.public()
        assert list(parsed) == list(record.public())
        assert "submit_attempts" not in parsed
        assert parsed["terminal"] is record.state.is_terminal
