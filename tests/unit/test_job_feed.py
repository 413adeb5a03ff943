"""Job feeds: resuming from the in-process ring, and the order the PostgreSQL feed
keeps when transactions commit out of the order of their numbers."""

from __future__ import annotations

import uuid

import pytest

from adapters.base import JobState
from gateway.jobs.events import EventBus
from gateway.jobs.feeds import LocalJobFeed, ReplayUnavailable
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord
from gateway.store.postgres.events import FeedCursor
from gateway.units import utcnow


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


async def _started(feed: LocalJobFeed) -> EventBus:
    bus = EventBus()
    await feed.start(None, bus)  # type: ignore[arg-type]  # the wrapped store is not used here
    return bus


async def test_a_resume_gets_each_missed_job_once_at_its_newest_record_in_order() -> None:
    feed = LocalJobFeed(first=100)
    await _started(feed)
    a, b, theirs = _record(), _record(), _record(owner="bob")
    seen = feed.publish(a).seq
    feed.publish(_as(a, JobState.QUEUED))
    feed.publish(b)
    feed.publish(theirs)
    last_a = feed.publish(_as(a, JobState.RUNNING))
    missed = await feed.since(seen, owner="alice")
    assert [(e.record.id, e.record.state) for e in missed] == [
        (b.id, JobState.SUBMITTING),
        (a.id, JobState.RUNNING),
    ]
    assert missed[-1].seq == last_a.seq
    assert [e.record.id for e in await feed.since(seen, job_id=theirs.id)] == [theirs.id]
    assert len(await feed.since(seen)) == 3  # every owner's
    assert await feed.since(last_a.seq) == []  # nothing missed


async def test_numbers_start_from_the_clock_so_an_earlier_runs_id_is_refused() -> None:
    earlier = LocalJobFeed()
    await _started(earlier)
    old = earlier.publish(_record()).seq
    later = LocalJobFeed()
    await _started(later)
    later.publish(_record())
    with pytest.raises(ReplayUnavailable):
        await later.since(old)


async def test_an_id_older_than_the_ring_or_not_yet_given_is_refused() -> None:
    feed = LocalJobFeed(keep=3, first=1)
    await _started(feed)
    seqs = [feed.publish(_record()).seq for _ in range(5)]
    assert feed.floor == seqs[1]
    assert len(await feed.since(seqs[1])) == 3  # saw the last one dropped: nothing lost
    with pytest.raises(ReplayUnavailable, match="older"):
        await feed.since(seqs[0])
    with pytest.raises(ReplayUnavailable, match="not an event"):
        await feed.since(seqs[-1] + 1)


async def test_the_ring_is_bounded_in_bytes_too() -> None:
    feed = LocalJobFeed(keep=100, keep_bytes=5000, first=1)
    await _started(feed)
    big = _record().model_copy(update={"spec": JobSpec(script="x" * 3000)})
    first = feed.publish(big).seq
    feed.publish(_as(big, JobState.RUNNING))
    assert feed.floor == first


async def test_a_live_subscriber_sees_the_feeds_numbers() -> None:
    feed = LocalJobFeed(first=500)
    bus = await _started(feed)
    with bus.subscribe(owner="alice") as sub:
        feed.publish(_record())
        event = await sub.next(timeout=0)
    assert event is not None and event.seq == 500 and bus.last_seq == 500


def test_cursor_publishes_in_order_while_numbers_are_contiguous() -> None:
    cursor = FeedCursor(10)
    assert cursor.take([11, 12, 13], xmin=100, now=0.0) == [11, 12, 13]
    assert (cursor.settled, cursor.gap) == (13, False)


def test_cursor_holds_changes_behind_an_open_transaction_until_it_commits() -> None:
    cursor = FeedCursor(10)
    assert cursor.take([11, 13], xmin=100, now=0.0) == [11]  # 12 is still committing
    assert cursor.gap and cursor.missing() == []  # 13 is held, not published
    cursor.mark(13, xid=105)
    assert cursor.take([13], xmin=101, now=0.5) == []
    assert cursor.take([12, 13], xmin=101, now=0.6) == [12, 13]
    assert (cursor.settled, cursor.gap) == (13, False)


def test_cursor_settles_a_number_that_never_commits_once_older_transactions_ended() -> None:
    cursor = FeedCursor(10)
    assert cursor.take([11, 13], xmin=100, now=0.0) == [11]
    cursor.mark(13, xid=105)
    assert cursor.take([13], xmin=104, now=0.1) == []  # the reader's xid still older
    assert cursor.take([13], xmin=106, now=0.2) == [13]  # 12 rolled back
    assert (cursor.settled, cursor.gap) == (13, False)


def test_cursor_publishes_past_a_long_gap_and_the_late_change_when_it_comes() -> None:
    cursor = FeedCursor(10, hold=1.0)
    assert cursor.take([11, 13], xmin=100, now=0.0) == [11]
    cursor.mark(13, xid=105)
    assert cursor.take([13, 14], xmin=100, now=1.5) == [13, 14]
    assert cursor.missing() == [12]
    assert cursor.take([12], xmin=100, now=2.0) == [12]  # late, but not lost
    assert (cursor.settled, cursor.missing()) == (14, [])
