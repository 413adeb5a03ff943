"""The job event bus and the store wrapper that feeds it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from adapters.base import JobState
from gateway.client.events import SSEParser
from gateway.jobs.events import EventBus, PublishingJobStore, Subscription
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.store.sqlite.jobs import SQLiteJobStore
from gateway.units import utcnow

ORDER = [JobState.SUBMITTING, JobState.QUEUED, JobState.RUNNING, JobState.COMPLETED]


def _record(owner: str = "alice", state: JobState = JobState.SUBMITTING) -> JobRecord:
    now = utcnow()
    return JobRecord(
        id=str(uuid.uuid4()),
        owner=owner,
        center="local",
        spec=JobSpec(command="true"),
        state=state,
        created_at=now,
        updated_at=now,
    )


def _as(record: JobRecord, state: JobState) -> JobRecord:
    return record.model_copy(update={"state": state})


async def _pending(sub: Subscription) -> list[JobRecord]:
    """What the subscriber has queued, without waiting for more."""
    got = []
    while (event := await sub.next(timeout=0)) is not None:
        got.append(event.record)
    return got


async def test_a_reader_that_keeps_up_gets_every_change_in_order() -> None:
    bus = EventBus()
    job = _record()
    with bus.subscribe(job_id=job.id) as sub:
        for state in ORDER:
            bus.publish(_as(job, state))
        assert [r.state for r in await _pending(sub)] == ORDER
        assert sub.dropped == 0


async def test_a_slow_subscriber_loses_intermediate_changes_but_gets_the_latest() -> None:
    bus = EventBus(queue_size=3)
    a, b = _record(), _record()
    with bus.subscribe(owner="alice") as sub:
        for _ in range(50):  # far more than the queue holds; the writer never waits
            bus.publish(_as(a, JobState.RUNNING))
            bus.publish(_as(b, JobState.QUEUED))
        bus.publish(_as(a, JobState.COMPLETED))
        assert len(sub) <= 3
        got = await _pending(sub)
        latest = {r.id: r.state for r in got}
        assert latest == {a.id: JobState.COMPLETED, b.id: JobState.QUEUED}
        assert got[-1].state is JobState.COMPLETED  # order of the survivors is kept
        assert sub.dropped > 90
        assert not sub.closed


async def test_a_subscriber_with_more_pending_jobs_than_its_queue_is_closed_not_grown() -> None:
    bus = EventBus(queue_size=4)
    with bus.subscribe() as sub:
        for _ in range(5):
            bus.publish(_record(owner=f"u{uuid.uuid4().hex[:6]}"))
        assert sub.overflowed and sub.closed and len(sub) == 0
        assert await sub.next(timeout=1) is None
    assert bus.subscriber_count() == 0


async def test_a_queue_is_bounded_in_bytes_of_large_scripts_too() -> None:
    """Records of jobs with 1 MiB scripts: a slow reader holds at most its byte
    bound of them (coalesced first), and one past it after that is closed."""
    bus = EventBus(queue_size=64, queue_bytes=4 << 20)
    big = [_record() for _ in range(4)]
    for record in big:
        record.spec = JobSpec(script="#!/bin/sh\n" + "x" * (1 << 20))
    with bus.subscribe(owner="alice") as sub:
        for _ in range(5):  # the same two jobs again and again: coalesced, kept
            bus.publish(_as(big[0], JobState.RUNNING))
            bus.publish(_as(big[1], JobState.RUNNING))
        assert len(sub) == 2 and sub.pending_bytes < 4 << 20 and not sub.closed
        assert [r.id for r in await _pending(sub)] == [big[0].id, big[1].id]
        assert sub.pending_bytes == 0
        for record in big[:3]:  # three of them fit once read; a fourth does not
            bus.publish(record)
        assert not sub.closed
        bus.publish(big[3])
        assert sub.overflowed and sub.closed and sub.pending_bytes == 0
    with bus.subscribe(job_id=big[0].id) as alone:  # one event alone always fits
        huge = _as(big[0], JobState.COMPLETED)
        huge.spec = JobSpec(script="y" * (4 << 20))
        bus.publish(huge)
        assert [r.state for r in await _pending(alone)] == [JobState.COMPLETED]


async def test_subscribers_see_their_job_their_owner_or_all() -> None:
    bus = EventBus()
    mine, theirs = _record("alice"), _record("bob")
    with (
        bus.subscribe(job_id=mine.id) as one,
        bus.subscribe(owner="alice") as alice,
        bus.subscribe() as everyone,
    ):
        bus.publish(mine)
        bus.publish(theirs)
        assert [r.id for r in await _pending(one)] == [mine.id]
        assert [r.id for r in await _pending(alice)] == [mine.id]
        assert [r.id for r in await _pending(everyone)] == [mine.id, theirs.id]
    assert bus.subscriber_count() == 0


async def test_a_waiting_reader_wakes_on_publish_and_on_close() -> None:
    bus = EventBus()
    job = _record()
    sub = bus.subscribe(job_id=job.id)
    reader = asyncio.create_task(sub.next(timeout=10))
    await asyncio.sleep(0)
    bus.publish(job)
    assert (await asyncio.wait_for(reader, 2)).record.id == job.id  # type: ignore[union-attr]
    reader = asyncio.create_task(sub.next(timeout=10))
    await asyncio.sleep(0)
    bus.close()
    assert await asyncio.wait_for(reader, 2) is None
    assert bus.subscribe(owner="alice").closed  # after shutdown nothing new opens


async def test_publishing_store_publishes_each_successful_write(tmp_path: Path) -> None:
    bus = EventBus()
    store = PublishingJobStore(SQLiteJobStore(tmp_path / "jobs.db"), bus)
    await store.open()
    try:
        job = _record()
        with bus.subscribe(job_id=job.id) as sub:
            await store.insert(job)
            await store.update(job.id, state=JobState.RUNNING, native_state="R")
            got = await _pending(sub)
            assert [(r.state, r.native_state) for r in got] == [
                (JobState.SUBMITTING, None),
                (JobState.RUNNING, "R"),
            ]
            assert got[1] == await store.get(job.id)
    finally:
        await store.close()


def test_sse_parser_joins_split_chunks_and_skips_comments() -> None:
    parser = SSEParser()
    wire = b': keepalive\n\nid: 7\nevent: job\ndata: {"a": 1}\n\nid: 8\nevent: job\ndata: {}\n\n'
    events = [e for i in range(0, len(wire), 5) for e in parser.feed(wire[i : i + 5])]
    assert events == [("7", "job", '{"a": 1}'), ("8", "job", "{}")]
