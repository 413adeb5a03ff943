"""Batched reconciliation of job states: one status query per center login per tick.

API reads are served from the store; only this loop talks to centers about
state. Jobs are grouped by the (center, login) they run as: a status query
runs as the job's own login, so the cost grows with the logins in use at a
center, never with its jobs. Groups are polled side by side, each bounded by a
timeout, so a hung center never delays the others.

Among replicas sharing a store, a center is polled only by the one holding its
lease (gateway/centers/ownership.py), and its writes are made under that lease:
once another replica has taken the lease they are refused (LeaseLost) and that
poll stops. A job another replica is sending (its lease `send/<id>` is held) is
left alone, and a job is sent again only under its own `send/<id>` lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime

from adapters.arrays import array_outcome
from adapters.base import (
    NOT_LISTED,
    TERMINAL_STATES,
    Adapter,
    JobState,
    NativeStatus,
)
from adapters.errors import AdapterError
from gateway.centers.configured import Center
from gateway.centers.ownership import CenterOwnership
from gateway.centers.submissions import retry_delay
from gateway.errors import DomainError
from gateway.fields import array_indices
from gateway.jobs.records import ElementRecord, JobRecord
from gateway.jobs.sending import SEND_PREFIX
from gateway.jobs.service import JobService, SubmitRejectedError
from gateway.jobs.staging import STAGING_OUTPUTS, waits_for_upload
from gateway.jobs.usage import epoch, job_usage
from gateway.store.contract import StoreUnavailable
from gateway.store.leases import Lease, LeaseLost
from gateway.units import utcnow

log = logging.getLogger("hpcfed.poller")

#: Consecutive failed ticks before a center's jobs are shown as UNKNOWN.
UNREACHABLE_TICKS = 3
#: A woken tick after a woken tick starts no sooner than this (seconds) after it began.
WOKEN_GAP = 0.5
#: native_state of a job that every attempt failed to send, which its center does not have.
NOT_SUBMITTED = "NOT_SUBMITTED"
#: native_state of a job its center has not listed for `unaccounted_after` seconds, with
#: nothing there confirming an end: UNKNOWN, never a silent FAILED; still asked about.
UNACCOUNTED = "UNACCOUNTED"


class Poller:
    def __init__(
        self,
        service: JobService,
        interval: float,
        timeout: float,
        unaccounted_after: float = 600.0,
        submit_attempts: int = 8,
        ownership: CenterOwnership | None = None,
    ) -> None:
        self.service = service
        #: Which centers this replica polls; None: every center (one gateway alone).
        self.ownership = ownership
        if ownership is not None:
            ownership.on_gained.append(lambda _: self.wake())
        self.interval = interval
        self.timeout = timeout
        self.unaccounted_after = unaccounted_after
        #: Attempts to send a job, `retry_delay` apart, before it is failed as not submitted.
        self.submit_attempts = submit_attempts
        #: Job id -> epoch seconds of the first answer of its center that did not list it
        #: (without evidence of its end), while that lasts.
        self._unlisted_since: dict[str, float] = {}
        #: Told of every job that becomes unaccounted for: (center id); set by the metrics.
        self.observe_unaccounted: Callable[[str], None] | None = None
        self.failures: dict[str, int] = defaultdict(int)
        #: Center id -> epoch seconds when a status query there last succeeded.
        self.last_polled: dict[str, float] = {}
        self._deadlines: dict[str, set[asyncio.Timeout]] = defaultdict(set)
        self.ticks = 0
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one tick at a time, whoever runs it
        #: Told how long each group's poll took: (center id, seconds); set by the metrics.
        self.observe_poll: Callable[[str, float], None] | None = None

    def wake(self) -> None:
        """Run the next tick now (e.g. after a submission or cancel)."""
        self._wake.set()

    async def run(self) -> None:
        """Tick every `interval` seconds (counted from the start of the last tick, so
        a slow query does not stretch the period), or at once when woken; a woken tick
        right after another woken one waits until `WOKEN_GAP` after that one began: a
        stream of submissions wakes it for every job, and each tick queries every
        center that has active jobs."""
        loop = asyncio.get_running_loop()
        woken = False
        unavailable = False  # the store is out of reach: said once, not every tick
        while True:
            started = loop.time()
            try:
                await self.tick()
                if unavailable:
                    log.info("polling again: the store answers")
                unavailable = False
            except StoreUnavailable as exc:
                if not unavailable:
                    log.warning("polling paused, the store is out of reach: %s", exc)
                unavailable = True
            except Exception:
                log.exception("poll tick failed")
            try:
                async with asyncio.timeout_at(started + self.interval):
                    await self._wake.wait()
                    if woken:  # a second woken tick in a row: what wakes it meanwhile
                        await asyncio.sleep(max(0.0, started + WOKEN_GAP - loop.time()))
                woken = True
            except TimeoutError:
                woken = False
            self._wake.clear()

    async def tick(self) -> None:
        async with self._lock:
            await self._tick()

    async def _tick(self) -> None:
        active = await self.service.store.active()
        by_center: dict[str, list[JobRecord]] = defaultdict(list)
        for job in active:
            if job.id not in self.service.in_flight:
                by_center[job.center].append(job)
        polls = []
        sending: set[str] | None = None
        for center_id, jobs in by_center.items():
            center = self.service.centers.find(center_id)
            if center is None:
                # Removed from the config: keep the jobs, say why they no longer move.
                await self._mark_unknown(jobs, f"center {center_id} is no longer configured")
                continue
            lease = None
            if self.ownership is not None:
                lease = self.ownership.lease(center_id)
                if lease is None:
                    continue  # another replica polls it
            if sending is None and any(j.native_id is None for j in jobs):
                # Jobs some replica is sending right now: theirs until it settles them.
                held = await self.service.leases.holders(SEND_PREFIX)
                sending = {name.removeprefix(SEND_PREFIX) for name in held}
            if sending:
                jobs = [j for j in jobs if j.native_id is not None or j.id not in sending]
            if (down := center.down_reason()) is not None:
                # The health monitor's breaker: no query that would only hang or fail.
                try:
                    await self._mark_unknown(jobs, down, lease)
                except LeaseLost:
                    self._lost(center_id, lease)
                continue
            by_adapter: dict[int, tuple[Adapter, list[JobRecord]]] = {}
            for job in jobs:
                try:
                    adapter = center.adapter_for_job(job)
                except DomainError as exc:  # the owner's login was unmapped meanwhile
                    await self._mark_unknown([job], exc.message)
                    continue
                by_adapter.setdefault(id(adapter), (adapter, []))[1].append(job)
            polls += [self._timed_poll(center, a, group, lease) for a, group in by_adapter.values()]
        await asyncio.gather(*polls)
        self.ticks += 1

    def _lost(self, center_id: str, lease: Lease | None) -> None:
        """A write under the center's lease was refused: another replica polls it now."""
        log.info("center %s: its lease moved on; left to the replica holding it", center_id)
        if self.ownership is not None and lease is not None:
            self.ownership.lost(center_id, lease)

    async def _timed_poll(
        self, center: Center, adapter: Adapter, jobs: list[JobRecord], lease: Lease | None
    ) -> None:
        started = time.monotonic()
        try:
            await self._poll(center, adapter, jobs, lease)
        except LeaseLost:
            self._lost(center.id, lease)
        finally:
            if self.observe_poll is not None:
                self.observe_poll(center.id, time.monotonic() - started)

    async def _poll(
        self, center: Center, adapter: Adapter, jobs: list[JobRecord], lease: Lease | None
    ) -> None:
        key = f"{center.id}/{jobs[0].login}" if jobs[0].login else center.id
        try:
            async with self._deadline(center.id):
                await self._reconcile_submitting(
                    center, adapter, [j for j in jobs if j.native_id is None], lease
                )
                tracked = [j for j in jobs if j.native_id is not None]
                if tracked:
                    statuses = await adapter.status_many(
                        {j.native_id: j.id for j in tracked if j.native_id}
                    )
                    for job in tracked:
                        status = statuses.get(job.native_id or "")
                        if status is not None:
                            status = self._vouched(center.id, job, status)
                        if status is not None:
                            await self._apply(job, status, lease)
                    await self._send_deferred_cancels(adapter, tracked, statuses)
                self.last_polled[center.id] = time.time()
        except (TimeoutError, AdapterError) as exc:
            self.failures[key] += 1
            log.warning(
                "center %s: poll failed (%d in a row): %s",
                key,
                self.failures[key],
                exc or "timeout",
            )
            if self.failures[key] >= UNREACHABLE_TICKS:
                await self._mark_unknown(
                    jobs, f"center {center.id} unreachable: {exc or 'timeout'}", lease
                )
            return
        self.failures[key] = 0

    def _vouched(self, center_id: str, job: JobRecord, status: NativeStatus) -> NativeStatus | None:
        """What of `status` may be stored. A job (or an array's element) the center did
        not list, with nothing there confirming its end, keeps what the gateway knew:
        None for a whole job (nothing to store), the element's previous record for an
        element (`merge_elements`). Once that has lasted `unaccounted_after` seconds it
        is shown as UNKNOWN (native state UNACCOUNTED) with the reason, once with a
        warning; it is still asked about every tick, and anything the center says of it
        later is taken as usual."""
        if not status.unlisted:
            self._unlisted_since.pop(job.id, None)
            return status
        now = time.time()
        since = self._unlisted_since.setdefault(job.id, now)
        if now - since < self.unaccounted_after:
            return None if status.native_state == NOT_LISTED else status
        at = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reason = (
            f"center {center_id} has not listed this job since {at} and nothing there "
            "records its end (no exit status in its job directory, no final record of the "
            "scheduler): it may be lost; still asked about every poll"
        )
        if job.native_state != UNACCOUNTED and not any(
            e.native_state == UNACCOUNTED for e in job.elements
        ):
            log.warning(
                "job %s: unaccounted for at %s (native id %s): not listed for %.0f s",
                job.id,
                center_id,
                job.native_id,
                now - since,
                extra={"job_id": job.id, "center": center_id},
            )
            if self.observe_unaccounted is not None:
                self.observe_unaccounted(center_id)
        elements = tuple(
            replace(e, state=JobState.UNKNOWN, native_state=UNACCOUNTED, reason=reason)
            if e.native_state == NOT_LISTED
            else e
            for e in status.elements
        )
        if status.native_state != NOT_LISTED:
            return replace(status, elements=elements)
        return replace(
            status,
            state=JobState.UNKNOWN,
            native_state=UNACCOUNTED,
            reason=reason,
            elements=elements,
        )

    @contextlib.asynccontextmanager
    async def _deadline(self, center_id: str) -> AsyncIterator[None]:
        """The poll's timeout, which `interrupt` may bring forward."""
        async with asyncio.timeout(self.timeout) as deadline:
            self._deadlines[center_id].add(deadline)
            try:
                yield
            finally:
                self._deadlines[center_id].discard(deadline)

    def interrupt(self, center_id: str) -> None:
        """End the polls under way at a center now (it went down): no tick hangs on it."""
        now = asyncio.get_running_loop().time()
        for deadline in list(self._deadlines.get(center_id, ())):
            deadline.reschedule(now)
        self.wake()

    async def _update(self, job_id: str, lease: Lease | None, **fields: object) -> JobRecord:
        """One job's write under the center's lease (LeaseLost once it moved on)."""
        return (await self.service.store.update_many([(job_id, fields)], lease=lease))[0]

    async def _apply(self, job: JobRecord, status: NativeStatus, lease: Lease | None) -> None:
        changed: dict[str, object] = {
            "state": status.state,
            "native_state": status.native_state,
            "reason": status.reason,
            "exit_code": status.exit_code,
        }
        if job.spec.array:
            elements = merge_elements(job, status)
            state, exit_code = array_outcome(elements)
            changed.update(state=state, exit_code=exit_code, elements=elements)
        final = changed["state"]
        if job.started_at is None and final not in (JobState.QUEUED, JobState.HELD):
            if status.started_at is not None or final is JobState.RUNNING:
                changed["started_at"] = epoch(status.started_at) or utcnow()
        if final in TERMINAL_STATES and job.usage is None:
            seen = job.model_copy(update={"finished_at": job.finished_at or utcnow()})
            if "started_at" in changed:
                seen.started_at = changed["started_at"]  # type: ignore[assignment]
            changed["usage"] = job_usage(
                seen,
                epoch(status.started_at),
                epoch(status.ended_at),
                changed.get("elements", ()),  # type: ignore[arg-type]
            )
        hold = isinstance(final, JobState) and self.service.staging.holds(job, final)
        if hold:
            # Ended at the center; ours once its outputs are collected.
            changed.update(state=JobState.RUNNING, reason=STAGING_OUTPUTS)
        if not all(getattr(job, k) == v for k, v in changed.items()):
            if changed["state"] in TERMINAL_STATES and job.finished_at is None:
                changed["finished_at"] = utcnow()
            job = await self._update(job.id, lease, **changed)
        if hold:
            assert isinstance(final, JobState)
            self.service.staging.collect(job, final)

    async def _send_deferred_cancels(
        self, adapter: Adapter, tracked: list[JobRecord], statuses: dict[str, NativeStatus]
    ) -> None:
        """Cancels asked for while the center was down (or before a restart) go now."""
        for job in tracked:
            status = statuses.get(job.native_id or "")
            if not job.cancel_requested or job.id in self.service.cancels_sent:
                continue
            if job.native_id is None or (status is not None and status.state in TERMINAL_STATES):
                continue
            log.info("job %s: sending the cancel asked for while it was unreachable", job.id)
            try:
                await adapter.cancel(job.native_id, job.id)
            except AdapterError as exc:  # tried again next tick
                log.warning("job %s: cancel at %s failed: %s", job.id, adapter.center_id, exc)
                continue
            self.service.cancels_sent.add(job.id)

    async def _mark_unknown(
        self, jobs: list[JobRecord], reason: str, lease: Lease | None = None
    ) -> None:
        for job in jobs:
            if job.native_id is not None and job.reason != reason:
                # native_state keeps the last state the center reported.
                await self._update(job.id, lease, state=JobState.UNKNOWN, reason=reason)

    async def _reconcile_submitting(
        self, center: Center, adapter: Adapter, jobs: list[JobRecord], lease: Lease | None
    ) -> None:
        """Jobs stored but not known to be at the center (and which no replica is
        sending): look them up by gateway id first, and submit only those the center
        has never seen, each under its lease `send/<id>`."""
        if not jobs:
            return
        # Only a job that was ever sent can be at the center; one still waiting for
        # its parents costs no remote lookup.
        sent = [j.id for j in jobs if j.submit_attempts > 0]
        found = await adapter.find_by_gateway_id(sent) if sent else {}
        now = utcnow()
        for job in jobs:
            native_id = found.get(job.id)
            if native_id is not None:
                log.info("job %s: found at %s as %s", job.id, center.id, native_id)
                record = await self._update(
                    job.id,
                    lease,
                    native_id=native_id,
                    state=JobState.QUEUED,
                    native_state="SUBMITTED",
                    reason=None,
                    submitted_at=job.submitted_at or now,
                )
                if record.cancel_requested:
                    await adapter.cancel(native_id, job.id)
            elif job.cancel_requested:
                await self._update(
                    job.id,
                    lease,
                    state=JobState.CANCELLED,
                    reason="cancelled before it reached the center",
                    finished_at=now,
                )
            elif job.submit_attempts >= self.submit_attempts and job.id in sent:
                # Its center, asked by gateway id just now, does not have it: never sent.
                log.warning(
                    "job %s: not submitted to %s after %d attempts: %s",
                    job.id,
                    center.id,
                    job.submit_attempts,
                    job.reason,
                )
                await self._update(
                    job.id,
                    lease,
                    state=JobState.FAILED,
                    native_state=NOT_SUBMITTED,
                    reason=f"not submitted: {job.submit_attempts} attempts failed, the last: "
                    f"{job.reason or 'no answer'}",
                    finished_at=now,
                )
            elif (
                now - job.updated_at >= retry_delay(job.submit_attempts)
                and job.id not in self.service.in_flight
                and not waits_for_upload(job)
            ):
                try:
                    await self.service.submit_at_center(job)
                except SubmitRejectedError as exc:
                    log.warning("job %s: refused by %s: %s", job.id, center.id, exc)


def merge_elements(job: JobRecord, status: NativeStatus) -> list[ElementRecord]:
    """Every index the spec names: what the center reports now, else what it said
    last, else QUEUED (a pending element the center has not listed yet)."""
    assert job.spec.array is not None
    # An element the center did not list, with no evidence of its end, keeps its record.
    reported = {e.index: e for e in status.elements if e.native_state != NOT_LISTED}
    previous = {e.index: e for e in job.elements}
    merged = []
    for index in array_indices(job.spec.array):
        if (now := reported.get(index)) is not None:
            merged.append(
                ElementRecord(
                    index=index,
                    native_id=now.native_id,
                    state=now.state,
                    native_state=now.native_state,
                    reason=now.reason,
                    exit_code=now.exit_code,
                    started_at=epoch(now.started_at),
                    ended_at=epoch(now.ended_at),
                )
            )
        elif index in previous:
            merged.append(previous[index])
        else:
            merged.append(ElementRecord(index=index, state=JobState.QUEUED))
    return merged
