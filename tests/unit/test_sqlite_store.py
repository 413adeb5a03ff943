"""The SQLite job store."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from adapters.base import JobState
from gateway.jobs.models import JobRecord, JobSpec
from gateway.jobs.store import DuplicateIdempotencyKey
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.units import utcnow


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


async def test_active_and_finished_leave_out_the_specs_content(store: SQLiteJobStore) -> None:
    """What the poller reads every tick holds no script, arguments or environment:
    a job with a 1 MiB script costs a few hundred bytes there; `get` has it all."""
    script, command = _record(), _record()
    script.spec = JobSpec(script="#!/bin/sh\n" + "x" * (1 << 20), environment={"A": "b"})
    command.spec = JobSpec(command="echo", arguments=["one", "two"], working_dir="~/w")
    for record in (script, command):
        await store.insert(record)
    summaries = {r.id: r for r in await store.active()}
    assert summaries[script.id].spec.script == "" and summaries[script.id].spec.command is None
    assert summaries[script.id].spec.environment == {}
    assert summaries[command.id].spec.command == "echo"
    assert summaries[command.id].spec.arguments == []
    assert summaries[command.id].spec.working_dir == "~/w"
    for record in (script, command):
        assert summaries[record.id].model_dump(exclude={"spec"}) == record.model_dump(
            exclude={"spec"}
        )
        assert summaries[record.id].spec.resources == record.spec.resources
        assert await store.get(record.id) == record
    await store.update(script.id, state=JobState.COMPLETED, finished_at=utcnow())
    [ended] = await store.finished(owner="alice")
    assert (ended.id, ended.spec.script) == (script.id, "")
    assert (await store.get(script.id)).spec == script.spec  # type: ignore[union-attr]


async def test_pages_reach_every_record_when_jobs_share_a_creation_time(
    store: SQLiteJobStore,
) -> None:
    """A batch stores many jobs at one instant (and some instants fall on a whole
    second): the cursor compares in the stored form, so no page loses any of them."""
    records = [_record() for _ in range(7)]
    whole_second = utcnow().replace(microsecond=0)
    for record in records:
        record.created_at = whole_second
    later = _record()
    later.created_at = whole_second.replace(microsecond=5)
    await store.insert_many([*records, later])
    seen, cursor = [], None
    while True:
        page = await store.list(owner="alice", limit=3, cursor=cursor)
        seen += [r.id for r in page.jobs]
        if (cursor := page.next_cursor) is None:
            break
    assert seen[0] == later.id
    assert sorted(seen[1:]) == sorted(r.id for r in records) and len(seen) == 8


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


async def test_array_elements_are_stored_and_read_back(store: SQLiteJobStore) -> None:
    from gateway.jobs.models import ElementRecord

    record = _record()
    await store.insert(record)
    elements = [ElementRecord(index=i, native_id=f"7_{i}", state=JobState.QUEUED) for i in range(4)]
    updated = await store.update(record.id, elements=elements)
    assert updated.elements == elements
    assert (await store.get(record.id)).elements == elements


async def test_a_database_from_before_array_elements_is_upgraded(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, center TEXT NOT NULL,"
        " state TEXT NOT NULL, native_id TEXT, native_state TEXT, reason TEXT,"
        " exit_code INTEGER, idempotency_key TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0,"
        " submit_attempts INTEGER NOT NULL DEFAULT 0, spec TEXT NOT NULL, created_at TEXT NOT NULL,"
        " updated_at TEXT NOT NULL, submitted_at TEXT, finished_at TEXT)"
    )
    old.execute(
        "INSERT INTO jobs (id, owner, center, state, spec, created_at, updated_at) VALUES"
        " ('00000000-0000-4000-8000-000000000000', 'alice', 'local', 'QUEUED',"
        " '{\"command\": \"true\"}', '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00')"
    )
    old.commit()
    old.close()
    store = SQLiteJobStore(path)
    await store.open()
    kept = await store.get("00000000-0000-4000-8000-000000000000")
    assert kept is not None and kept.elements == [] and kept.state is JobState.QUEUED
    await store.close()
