"""The JobStore contract, over every implementation (tests/contract/conftest.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import JobState
from gateway.jobs.models import JobSpec
from gateway.jobs.records import ElementRecord
from gateway.jobs.store import (
    DuplicateIdempotencyKey,
    InvalidCursor,
    JobQuery,
    JobStore,
    NoSuchJob,
    StoreError,
)
from gateway.units import utcnow
from tests.contract.conftest import Backend
from tests.contract.records import job, rich


async def every_page(store: JobStore, query: JobQuery) -> list[list[str]]:
    """The ids of each page, following the cursors to the end."""
    pages = []
    while True:
        page = await store.list(query)
        pages.append([r.id for r in page.jobs])
        if page.next_cursor is None:
            return pages
        query = JobQuery(**{**query.__dict__, "cursor": page.next_cursor})


# ---------------------------------------------------------------- create, read, update


async def test_a_stored_record_reads_back_equal(job_store: JobStore) -> None:
    records = [rich(), job()]
    for record in records:
        await job_store.insert(record)
    for record in records:
        assert await job_store.get(record.id) == record
    assert await job_store.get(str(uuid.uuid4())) is None
    await job_store.ping()


async def test_records_read_are_independent_copies(job_store: JobStore) -> None:
    record = job()
    await job_store.insert(record)
    first = await job_store.get(record.id)
    assert first is not None
    first.state = JobState.FAILED
    first.spec.arguments.append("changed")
    assert await job_store.get(record.id) == record


async def test_records_outlive_the_store_object(job_backend: Backend) -> None:
    record = rich()
    first = job_backend.make()
    await first.open()
    await first.insert(record)
    await first.close()
    second = job_backend.make()
    await second.open()
    try:
        assert await second.get(record.id) == record
    finally:
        await second.close()


async def test_update_changes_the_fields_and_the_update_time(job_store: JobStore) -> None:
    record = job()
    await job_store.insert(record)
    assert await job_store.get(record.id) == record
    updated = await job_store.update(record.id, state=JobState.QUEUED, native_id="42")
    assert (updated.state, updated.native_id) == (JobState.QUEUED, "42")
    assert updated.updated_at >= record.updated_at
    assert await job_store.get(record.id) == updated
    elements = [ElementRecord(index=i, native_id=f"7_{i}", state=JobState.QUEUED) for i in range(3)]
    again = await job_store.update(record.id, elements=elements, state=JobState.RUNNING)
    assert again.elements == elements
    assert await job_store.get(record.id) == again
    assert (await job_store.list(JobQuery(owner=None))).jobs == [again]


@pytest.mark.parametrize("field", ["id", "owner", "login", "spec", "created_at"])
async def test_fields_that_never_change_are_refused(job_store: JobStore, field: str) -> None:
    record = job()
    await job_store.insert(record)
    with pytest.raises(ValueError, match=field):
        await job_store.update(record.id, **{field: getattr(record, field)}, native_id="1")
    assert await job_store.get(record.id) == record  # nothing written


async def test_updating_a_job_that_does_not_exist_is_no_such_job(job_store: JobStore) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NoSuchJob) as raised:
        await job_store.update(missing, state=JobState.QUEUED)
    assert isinstance(raised.value, StoreError) and raised.value.job_id == missing
    assert await job_store.get(missing) is None
    record = job()
    await job_store.insert(record)
    with pytest.raises(NoSuchJob):  # one unknown id: none of the changes is kept
        await job_store.update_many(
            [(record.id, {"native_id": "1"}), (missing, {"native_id": "2"})]
        )
    assert await job_store.get(record.id) == record


async def test_update_many_changes_each_job(job_store: JobStore) -> None:
    records = [job(), job()]
    await job_store.insert_many(records)
    changed = await job_store.update_many(
        [(records[0].id, {"native_id": "1"}), (records[1].id, {"state": JobState.QUEUED})]
    )
    assert [r.id for r in changed] == [r.id for r in records]
    assert changed[0].native_id == "1" and changed[1].state is JobState.QUEUED
    for record in changed:
        assert await job_store.get(record.id) == record


async def test_concurrent_updates_leave_the_last_one(job_store: JobStore) -> None:
    record = job()
    await job_store.insert(record)
    await job_store.get(record.id)
    results = await asyncio.gather(
        *(job_store.update(record.id, native_id=str(n)) for n in range(1, 4))
    )
    read = await job_store.get(record.id)
    assert read == results[-1] and read is not None and read.native_id == "3"


async def test_many_concurrent_updates_of_one_job_apply_in_the_order_issued(
    job_store: JobStore,
) -> None:
    """Tasks of one process changing one job at once (as many as a pool has
    connections, and more): each update returns what it wrote after every earlier
    one, and the job is left with the change issued last."""
    record = job()
    await job_store.insert(record)
    results = await asyncio.gather(
        *(job_store.update(record.id, submit_attempts=n) for n in range(1, 21))
    )
    assert [r.submit_attempts for r in results] == list(range(1, 21))
    read = await job_store.get(record.id)
    assert read is not None and read.submit_attempts == 20


# ---------------------------------------------------------------- idempotency keys


async def test_a_reused_idempotency_key_hands_back_the_job_holding_it(job_store: JobStore) -> None:
    first = job(idempotency_key="k1")
    await job_store.insert(first)
    with pytest.raises(DuplicateIdempotencyKey) as dup:
        await job_store.insert(job(idempotency_key="k1"))
    assert dup.value.existing == first
    await job_store.insert(job(owner="bob", idempotency_key="k1"))  # keys are per owner
    await job_store.insert(job())  # no key: never a duplicate
    await job_store.insert(job())
    assert len((await job_store.list(JobQuery(owner=None))).jobs) == 4


async def test_insert_many_stores_the_others_beside_a_duplicate(job_store: JobStore) -> None:
    held = job(idempotency_key="k1")
    await job_store.insert(held)
    batch = [job(), job(idempotency_key="k1"), job(idempotency_key="k2")]
    outcomes = await job_store.insert_many(batch)
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], DuplicateIdempotencyKey) and outcomes[1].existing == held
    assert await job_store.get(batch[1].id) is None
    for record in (batch[0], batch[2]):
        assert await job_store.get(record.id) == record


# ---------------------------------------------------------------- lists and pages


async def test_list_is_newest_first_and_filters(job_store: JobStore) -> None:
    start = utcnow()
    mine = [job(created_at=start + timedelta(seconds=i)) for i in range(3)]
    theirs = job(owner="bob", center="centera", created_at=start + timedelta(seconds=5))
    await job_store.insert_many([*mine, theirs])
    await job_store.update(mine[1].id, state=JobState.RUNNING)

    async def ids(**query: object) -> list[str]:
        return [r.id for r in (await job_store.list(JobQuery(**query))).jobs]  # type: ignore[arg-type]

    assert await ids(owner="alice") == [r.id for r in reversed(mine)]
    assert await ids(owner=None) == [theirs.id, *(r.id for r in reversed(mine))]
    assert await ids(owner="alice", states=[JobState.RUNNING]) == [mine[1].id]
    assert await ids(owner=None, states=[JobState.RUNNING, JobState.SUBMITTING]) == [
        theirs.id,
        mine[2].id,
        mine[1].id,
        mine[0].id,
    ]
    assert await ids(owner=None, center="centera") == [theirs.id]
    assert await ids(owner="alice", center="centera") == []
    assert await ids(owner="carol") == []
    assert await ids(owner=None, limit=2) == [theirs.id, mine[2].id]


async def test_pages_reach_every_job_once_when_jobs_share_a_creation_instant(
    job_store: JobStore,
) -> None:
    """A batch stores many jobs at one instant (and some instants fall on a whole
    second): following the cursors, no page loses or repeats any of them."""
    whole_second = utcnow().replace(microsecond=0)
    same = [job(created_at=whole_second) for _ in range(7)]
    later = job(created_at=whole_second.replace(microsecond=5))
    earlier = job(created_at=whole_second - timedelta(microseconds=1))
    await job_store.insert_many([*same, later, earlier])
    for limit in (1, 3, 100):
        pages = await every_page(job_store, JobQuery(owner="alice", limit=limit))
        seen = [i for page in pages for i in page]
        assert all(len(page) <= limit for page in pages)
        assert len(seen) == len(set(seen)) == 9
        assert seen[0] == later.id and seen[-1] == earlier.id
        assert sorted(seen[1:-1]) == sorted(r.id for r in same)


async def test_pages_keep_the_filters(job_store: JobStore) -> None:
    records = [job(owner="bob" if i % 2 else "alice") for i in range(6)]
    await job_store.insert_many(records)
    pages = await every_page(job_store, JobQuery(owner="alice", limit=1))
    assert sorted(i for page in pages for i in page) == sorted(
        r.id for r in records if r.owner == "alice"
    )


async def test_a_page_ends_early_past_max_bytes_and_holds_at_least_one(
    job_store: JobStore,
) -> None:
    big = [job(spec=JobSpec(script="#!/bin/sh\n" + "x" * 20_000)) for _ in range(4)]
    await job_store.insert_many(big)
    page = await job_store.list(JobQuery(owner=None, max_bytes=1))
    assert len(page.jobs) == 1 and page.next_cursor is not None
    pages = await every_page(job_store, JobQuery(owner=None, max_bytes=50_000))
    assert all(1 <= len(p) < 4 for p in pages)
    assert sorted(i for p in pages for i in p) == sorted(r.id for r in big)
    assert (await job_store.list(JobQuery(owner=None, max_bytes=10 << 20))).next_cursor is None


@pytest.mark.parametrize("cursor", ["nonsense", "", "!!", "Zm9v", "MjAyNnx4"])
async def test_a_cursor_the_store_did_not_make_is_invalid_cursor(
    job_store: JobStore, cursor: str
) -> None:
    await job_store.insert(job())
    with pytest.raises(InvalidCursor) as raised:
        await job_store.list(JobQuery(owner=None, cursor=cursor or "="))
    assert isinstance(raised.value, StoreError)
    assert str(raised.value) == "not a cursor returned by this API"


# ---------------------------------------------------------------- summary reads


async def test_active_is_every_unfinished_job_oldest_first(job_store: JobStore) -> None:
    start = utcnow()
    records = [job(created_at=start + timedelta(seconds=i), owner=f"u{i}") for i in range(4)]
    await job_store.insert_many(records)
    await job_store.update(records[1].id, state=JobState.COMPLETED, finished_at=utcnow())
    await job_store.update(records[2].id, state=JobState.RUNNING)
    assert [r.id for r in await job_store.active()] == [
        records[0].id,
        records[2].id,
        records[3].id,
    ]


async def test_active_and_finished_leave_out_the_specs_content(job_store: JobStore) -> None:
    """What the poller reads every tick holds no script, arguments or environment:
    a job with a 1 MiB script costs a few hundred bytes there; `get` has it all."""
    script = job(spec=JobSpec(script="#!/bin/sh\n" + "x" * (1 << 20), environment={"A": "b"}))
    command = job(spec=JobSpec(command="echo", arguments=["one", "two"], working_dir="~/w"))
    await job_store.insert_many([script, command])
    summaries = {r.id: r for r in await job_store.active()}
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
        assert await job_store.get(record.id) == record
    await job_store.update(script.id, state=JobState.COMPLETED, finished_at=utcnow())
    [ended] = await job_store.finished(owner="alice")
    assert (ended.id, ended.spec.script, ended.spec.environment) == (script.id, "", {})
    assert (await job_store.get(script.id)).spec == script.spec  # type: ignore[union-attr]


async def test_finished_is_a_window_of_ended_jobs_oldest_first(job_store: JobStore) -> None:
    start = datetime(2026, 5, 1, tzinfo=UTC)
    records = [
        job(center="a" if i < 3 else "b", owner="bob" if i == 4 else "alice") for i in range(5)
    ]
    await job_store.insert_many([*records, job()])  # the last never ends
    for i, record in enumerate(records):
        await job_store.update(
            record.id, state=JobState.COMPLETED, finished_at=start + timedelta(hours=i)
        )

    async def ids(**query: object) -> list[str]:
        return [r.id for r in await job_store.finished(**query)]  # type: ignore[arg-type]

    assert await ids(owner=None) == [r.id for r in records]
    assert await ids(owner="alice") == [r.id for r in records[:4]]
    assert await ids(owner=None, center="b") == [records[3].id, records[4].id]
    window = {"since": start + timedelta(hours=1), "until": start + timedelta(hours=3)}
    assert await ids(owner=None, **window) == [records[1].id, records[2].id]  # [since, until)
    naive = {k: v.replace(tzinfo=None) for k, v in window.items()}  # taken as UTC
    assert await ids(owner=None, **naive) == [records[1].id, records[2].id]


async def test_counts_by_center_and_state(job_store: JobStore) -> None:
    records = [job(center="a"), job(center="a"), job(center="b")]
    await job_store.insert_many(records)
    await job_store.update(records[1].id, state=JobState.COMPLETED, finished_at=utcnow())
    assert await job_store.count_by_center_state() == {
        ("a", "SUBMITTING"): 1,
        ("a", "COMPLETED"): 1,
        ("b", "SUBMITTING"): 1,
    }


# ---------------------------------------------------------------- two stores at one place


async def _two(job_backend: Backend) -> tuple[JobStore, JobStore]:
    first, second = job_backend.make(), job_backend.make()
    await first.open()
    await second.open()
    return first, second


async def test_an_idempotency_key_sent_to_two_stores_at_once_is_stored_once(
    job_backend: Backend,
) -> None:
    """Two replicas (two store objects at one place) take the same key at once: one
    job is stored, every other insert hands it back."""
    stores = await _two(job_backend)
    try:
        attempts = [job(idempotency_key="shared") for _ in range(8)]
        outcomes = await asyncio.gather(
            *(stores[n % 2].insert(r) for n, r in enumerate(attempts)), return_exceptions=True
        )
        stored = [r for r, out in zip(attempts, outcomes, strict=True) if out is None]
        assert len(stored) == 1
        for out in outcomes:
            if out is not None:
                assert isinstance(out, DuplicateIdempotencyKey)
                assert out.existing == stored[0]
        for store in stores:
            page = await store.list(JobQuery(owner="alice"))
            assert [r.id for r in page.jobs] == [stored[0].id]
    finally:
        for store in stores:
            await store.close()


async def test_batches_sharing_keys_on_two_stores_at_once_store_each_key_once(
    job_backend: Backend,
) -> None:
    """Two batches with the same keys in opposite orders, at once: each key is stored
    once, and neither batch fails (no deadlock between them)."""
    stores = await _two(job_backend)
    try:
        keys = [f"k{n}" for n in range(6)]
        batches = [
            [job(idempotency_key=k) for k in keys],
            [job(idempotency_key=k) for k in reversed(keys)],
        ]
        outcomes = await asyncio.gather(
            stores[0].insert_many(batches[0]), stores[1].insert_many(batches[1])
        )
        held: dict[str, str] = {}
        for batch, outs in zip(batches, outcomes, strict=True):
            for record, out in zip(batch, outs, strict=True):
                if out is None:
                    assert held.setdefault(str(record.idempotency_key), record.id) == record.id
        assert sorted(held) == keys
        for batch, outs in zip(batches, outcomes, strict=True):
            for record, out in zip(batch, outs, strict=True):
                if out is not None:
                    assert out.existing.id == held[str(record.idempotency_key)]
        page = await stores[1].list(JobQuery(owner="alice"))
        assert sorted(r.id for r in page.jobs) == sorted(held.values())
    finally:
        for store in stores:
            await store.close()


async def test_a_jobs_task_document_reads_back_updates_and_filters_the_list(
    job_store: JobStore,
) -> None:
    """A GA4GH TES task's document (any JSON, unicode and escapes included) is kept with
    its job, changed by update, and `tasks_only` lists just the jobs that have one."""
    document = {"document": {"name": 'ünï "q" \\ \n', "tags": {"k": ""}}, "logs": None}
    plain, task = job(), job(task=document)
    await job_store.insert_many([plain, task])
    assert (await job_store.get(task.id)) == task
    assert (await job_store.get(plain.id)).task is None  # type: ignore[union-attr]
    logs = {**document, "logs": {"executors": [{"exit_code": 3}], "system": ["x"]}}
    updated = await job_store.update(task.id, task=logs)
    assert updated.task == logs and (await job_store.get(task.id)).task == logs  # type: ignore[union-attr]
    page = await job_store.list(JobQuery(owner="alice", tasks_only=True))
    assert [r.id for r in page.jobs] == [task.id] and page.jobs[0].task == logs
