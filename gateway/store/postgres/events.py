"""The job feed of the PostgreSQL store: every change of a job, whichever replica or
code path wrote it, reaches the event bus of every replica, and a watcher that
reconnects to any replica with the id of its last event gets what it missed.

A trigger on `jobs` adds a row to `job_events` (seq, job, owner) in the transaction
of the write itself, and notifies the channel `hpcfed_job_events` (one notification
per transaction: PostgreSQL folds equal ones). Each replica holds one connection of
its own, outside the pool, that LISTENs; on a notification, and after a reconnect,
it reads the rows after the last one it published and publishes each changed job's
current record, with the row's seq as the event's id (`FeedCursor` below keeps that
order when transactions commit out of the order of their numbers).

Retention: rows older than `keep_age` or beyond the newest `keep_rows` are deleted
(by any replica, every `prune_every` seconds); `job_events_pruned` holds the highest
seq deleted, and a resume from before it is refused (ReplayUnavailable: the stream
tells the client to re-read). A replica that was cut off longer than that ends its
streams as overflowed, so their clients re-read too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from typing import Any

import psycopg

from gateway.jobs.events import EventBus, JobEvent
from gateway.jobs.feeds import REPLAY_MAX_JOBS, JobFeed, ReplayUnavailable
from gateway.jobs.store import JobStore
from gateway.store.contract import StoreError
from gateway.store.outages import stop
from gateway.store.postgres.pool import PgPool, store_error

log = logging.getLogger("hpcfed.events")

CHANNEL = "hpcfed_job_events"  # as in the trigger below

#: Migration 3 of the PostgreSQL schema (gateway/store/postgres/schema.py).
JOB_EVENTS_SQL = """
CREATE TABLE job_events (
    seq bigserial PRIMARY KEY,
    job_id text COLLATE "C" NOT NULL,
    owner text NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_events_owner ON job_events (owner, seq);
CREATE INDEX job_events_job ON job_events (job_id, seq);
CREATE INDEX job_events_at ON job_events (at);
CREATE TABLE job_events_pruned (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    through bigint NOT NULL
);
INSERT INTO job_events_pruned (through) VALUES (0);
CREATE FUNCTION hpcfed_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, owner) VALUES (NEW.id, NEW.owner);
    PERFORM pg_notify('hpcfed_job_events', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER jobs_events AFTER INSERT OR UPDATE ON jobs
    FOR EACH ROW EXECUTE FUNCTION hpcfed_job_event();
"""

#: Rows one read of the feed takes at most.
BATCH = 1 << 9
#: Retention of the feed's rows.
KEEP_AGE = 3600.0
KEEP_ROWS = 100_000
PRUNE_EVERY = 60.0
#: How long changes wait behind an earlier number whose transaction is still open,
#: before they are published anyway (that one then comes late, out of order).
GAP_HOLD = 2.0
#: How often the feed is read while a gap is open, and when nothing is notified.
GAP_POLL = 0.05
IDLE_POLL = 5.0
RECONNECT_FIRST, RECONNECT_MAX = 0.2, 5.0
#: How many records are read at once when publishing.
_READ_AT_ONCE = 8


class FeedCursor:
    """Which numbers of the feed are published. A number is taken when a transaction
    writes a job, so a later number may commit first: a gap is held (up to `hold`
    seconds) until it fills or is known to stay empty. A read in a snapshot whose
    xmin is above the reader's own xid of an earlier read (its `mark`) sees every
    number up to the highest that earlier read saw, or never will."""

    def __init__(self, settled: int, *, hold: float = GAP_HOLD) -> None:
        self.settled = settled  # every number <= settled is published or never will be
        self.high = settled  # the highest number published
        self.published: set[int] = set()  # those > settled
        self.marks: list[tuple[int, int]] = []  # (highest number seen, the reader's xid)
        self.hold = hold
        self._held_since: float | None = None

    @property
    def gap(self) -> bool:
        return self.high > self.settled or self._held_since is not None

    def missing(self) -> list[int]:
        """The numbers up to `high` not yet published (those a read must ask for again)."""
        return [s for s in range(self.settled + 1, self.high + 1) if s not in self.published]

    def take(self, seen: Iterable[int], xmin: int, now: float) -> list[int]:
        """The numbers to publish now, in order, of those a read saw (in a snapshot
        whose oldest open transaction is `xmin`)."""
        new = sorted({s for s in seen if s > self.settled} - self.published)
        final = self.settled
        open_marks = []
        for bound, xid in self.marks:
            if xmin > xid:
                final = max(final, bound)
            else:
                open_marks.append((bound, xid))
        self.marks = open_marks
        known = self.published.union(new)
        settled = final
        while settled + 1 in known:
            settled += 1
        out = [s for s in new if s <= settled]
        held = [s for s in new if s > settled]
        if held or self.high > settled:
            if self._held_since is None:
                self._held_since = now
            if held and now - self._held_since >= self.hold:
                log.warning("job events: %d published past a gap at %d", len(held), settled + 1)
                out += held
        else:
            self._held_since = None
        self.published.update(out)
        self.high = max(self.high, *out) if out else self.high
        self.settled = settled
        self.published = {s for s in self.published if s > settled}
        if self.high <= settled and not held:
            self._held_since = None
        return out

    def mark(self, bound: int, xid: int) -> None:
        if not self.marks or self.marks[-1][0] < bound:
            self.marks.append((bound, xid))

    def skip_to(self, seq: int) -> None:
        """Everything up to `seq` is gone (pruned): start after it."""
        if seq > self.settled:
            self.settled = seq
            self.high = max(self.high, seq)
            self.published = {s for s in self.published if s > seq}


class PgJobFeed(JobFeed):
    """The job feed on `job_events` of the database the pool serves."""

    def __init__(
        self,
        pool: PgPool,
        dsn: str,
        *,
        keep_age: float = KEEP_AGE,
        keep_rows: int = KEEP_ROWS,
        prune_every: float = PRUNE_EVERY,
        hold: float = GAP_HOLD,
    ) -> None:
        self.pool, self.dsn = pool, dsn
        self.keep_age, self.keep_rows, self.prune_every = keep_age, keep_rows, prune_every
        self.hold = hold
        self.connected = False
        self.reconnects = 0
        self._cursor = FeedCursor(0, hold=hold)
        self._jobs: JobStore | None = None
        self._bus: EventBus | None = None
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    # ---------------------------------------------------------------- life cycle

    async def start(self, jobs: JobStore, bus: EventBus) -> JobStore:
        self._jobs, self._bus = jobs, bus
        conn = await self._connect()  # StoreUnavailable when the server is out of reach
        try:
            head, pruned = await self._head(conn)
            # Changes before this start are not published; one still committing (a
            # number below the head not yet visible) is, when it commits.
            cursor = FeedCursor(max(pruned, head - BATCH), hold=self.hold)
            cur = await conn.execute(
                "SELECT seq FROM job_events WHERE seq > %s AND seq <= %s", (cursor.settled, head)
            )
            cursor.published = {int(s) for (s,) in await cur.fetchall()}
            cursor.high = head
        except psycopg.Error as exc:
            await conn.close()
            raise store_error(exc) from exc
        self._cursor = cursor
        bus.number_from(head + 1)
        self._task = asyncio.create_task(self._run(conn), name="job-feed")
        return jobs  # the trigger sees every write

    async def close(self) -> None:
        await stop(self._task)
        self._task = None

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True, application_name="hpcfed-events"
            )
            await conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise store_error(exc) from exc
        self.connected = True
        return conn

    async def _head(self, conn: psycopg.AsyncConnection[Any]) -> tuple[int, int]:
        """The highest number in the feed, and the highest pruned."""
        cur = await conn.execute(
            "SELECT coalesce(max(seq), 0), (SELECT through FROM job_events_pruned) FROM job_events"
        )
        row = await cur.fetchone()
        assert row is not None
        pruned = int(row[1])
        return max(int(row[0]), pruned), pruned

    async def _run(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        delay = RECONNECT_FIRST
        while True:
            try:
                if conn is None:
                    conn = await self._connect()
                    self.reconnects += 1
                    log.info("job events: listening again")
                delay = RECONNECT_FIRST
                while True:
                    await self._catch_up(conn)
                    await self._maybe_prune(conn)
                    wait = GAP_POLL if self._cursor.gap else IDLE_POLL
                    async for _ in conn.notifies(timeout=wait, stop_after=1):
                        pass
            except (psycopg.Error, StoreError) as exc:
                error = store_error(exc) if isinstance(exc, psycopg.Error) else exc
                log.warning("job events: %s; listening again in %.1fs", error, delay)
            except Exception:
                log.exception("job events: the feed failed; listening again in %.1fs", delay)
            self.connected = False
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
            await asyncio.sleep(delay)  # backoff before reconnecting
            delay = min(delay * 2, RECONNECT_MAX)

    # ---------------------------------------------------------------- reading

    async def _catch_up(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Publish what the feed has after what was published, batch by batch."""
        while await self._read_once(conn) >= BATCH:
            pass

    async def _read_once(self, conn: psycopg.AsyncConnection[Any]) -> int:
        cursor = self._cursor
        async with conn.transaction():
            # One snapshot for the horizon and the rows (the first statement fixes it).
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            cur = await conn.execute(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint,"
                " (SELECT through FROM job_events_pruned)"
            )
            row = await cur.fetchone()
            assert row is not None
            xmin, pruned = int(row[0]), int(row[1])
            if pruned > cursor.settled:
                self._lost(pruned)
            cursor.skip_to(pruned)
            cur = await conn.execute(
                "SELECT seq, job_id FROM job_events WHERE seq = ANY(%s) OR seq > %s"
                " ORDER BY seq LIMIT %s",
                (cursor.missing(), cursor.high, BATCH),
            )
            rows = [(int(seq), str(job)) for seq, job in await cur.fetchall()]
            out = set(cursor.take((s for s, _ in rows), xmin, time.monotonic()))
            if cursor.gap:
                cur = await conn.execute("SELECT pg_current_xact_id()::text::bigint")
                xid = await cur.fetchone()
                assert xid is not None
                cursor.mark(max([cursor.high, *(s for s, _ in rows)]), int(xid[0]))
        await self._publish([(s, j) for s, j in rows if s in out])
        return len(rows)

    def _lost(self, pruned: int) -> None:
        log.warning(
            "job events: changes up to %d were pruned before this replica read them;"
            " its streams end so their clients re-read",
            pruned,
        )
        if self._bus is not None:
            self._bus.overflow_all()

    async def _publish(self, changes: list[tuple[int, str]]) -> None:
        """Each changed job's current record, at the number of its newest change."""
        if not changes or self._jobs is None or self._bus is None:
            return
        newest: dict[str, int] = {}
        for seq, job_id in changes:
            newest[job_id] = seq
        order = sorted(newest.items(), key=lambda item: item[1])
        jobs, bus = self._jobs, self._bus
        for i in range(0, len(order), _READ_AT_ONCE):
            chunk = order[i : i + _READ_AT_ONCE]
            records = await asyncio.gather(*(jobs.get(job_id) for job_id, _ in chunk))
            for (_, seq), record in zip(chunk, records, strict=True):
                if record is not None:
                    bus.publish_as(seq, record)

    # ---------------------------------------------------------------- replay

    async def since(
        self, seq: int, *, owner: str | None = None, job_id: str | None = None
    ) -> list[JobEvent]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT (SELECT through FROM job_events_pruned),"
                " (SELECT coalesce(max(seq), 0) FROM job_events)"
            )
            row = await cur.fetchone()
            assert row is not None
            pruned, head = int(row[0]), int(row[1])
            if seq < pruned:
                raise ReplayUnavailable(seq, "older than the events the gateway keeps")
            if seq > max(head, pruned):
                raise ReplayUnavailable(seq, "not an event of this gateway")
            cur = await conn.execute(
                "SELECT job_id, max(seq) AS last FROM job_events WHERE seq > %s"
                " AND (%s::text IS NULL OR owner = %s) AND (%s::text IS NULL OR job_id = %s)"
                " GROUP BY job_id ORDER BY last LIMIT %s",
                (seq, owner, owner, job_id, job_id, REPLAY_MAX_JOBS + 1),
            )
            changed = [(str(j), int(s)) for j, s in await cur.fetchall()]
        if len(changed) > REPLAY_MAX_JOBS:
            raise ReplayUnavailable(seq, f"changes of more than {REPLAY_MAX_JOBS} jobs")
        if self._jobs is None:
            return []
        missed: list[JobEvent] = []
        for i in range(0, len(changed), _READ_AT_ONCE):
            chunk = changed[i : i + _READ_AT_ONCE]
            records = await asyncio.gather(*(self._jobs.get(j) for j, _ in chunk))
            for (_, last), record in zip(chunk, records, strict=True):
                if record is not None:
                    missed.append(JobEvent(last, record))
        return missed

    # ---------------------------------------------------------------- retention

    async def _maybe_prune(self, conn: psycopg.AsyncConnection[Any]) -> None:
        now = time.monotonic()
        if now - self._pruned_at < self.prune_every:
            return
        self._pruned_at = now
        await self.prune(conn)

    async def prune(self, conn: psycopg.AsyncConnection[Any] | None = None) -> int:
        """Delete the rows past the retention; returns the highest seq deleted so far."""
        sql = (
            "WITH cut AS (SELECT greatest("
            " coalesce((SELECT max(seq) FROM job_events"
            "   WHERE at < now() - make_interval(secs => %s)), 0),"
            " coalesce((SELECT max(seq) FROM job_events), 0) - %s) AS through),"
            " gone AS (DELETE FROM job_events WHERE seq <= (SELECT through FROM cut))"
            " UPDATE job_events_pruned SET through = greatest(through, (SELECT through FROM cut))"
            " RETURNING through"
        )
        params = (self.keep_age, self.keep_rows)
        if conn is None:
            async with self.pool.connection() as pooled:
                cur = await pooled.execute(sql, params)
                row = await cur.fetchone()
        else:
            cur = await conn.execute(sql, params)
            row = await cur.fetchone()
        return int(row[0]) if row else 0
