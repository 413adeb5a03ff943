"""Job operations: submit, read, list, cancel, output. The HTTP layer calls these.

The rule that keeps jobs from being lost or run twice lives here: a record is
stored (state SUBMITTING) before its center is contacted; a submission whose
outcome is unknown stays SUBMITTING and is reconciled by the poller (looked up
at the center by gateway id) rather than repeated blindly.

Among replicas, the one sending a job holds its lease `send/<id>` (from before the
record is stored until the outcome is), so that no other replica's poller looks it
up or sends it again meanwhile; a job is only ever sent under that lease.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from adapters.base import JobState, OutputChunk
from adapters.errors import AdapterError, CenterUnavailable, SubmitRejected
from gateway.apps.jobs import app_run, with_app_resources
from gateway.apps.service import AppPlan, AppService
from gateway.centers.configured import Center, CenterRegistry
from gateway.centers.ownership import DEFAULT_TTL
from gateway.centers.placement import Placer
from gateway.centers.submissions import SubmissionOutcomes
from gateway.errors import DomainError, adapter_error
from gateway.fields import array_indices
from gateway.jobs.batch import BatchItem, submit_batch
from gateway.jobs.dependencies import check_center, load_parents, native_dependencies
from gateway.jobs.models import JobSpec
from gateway.jobs.records import AppRun, JobRecord, PlacementDecision, Price
from gateway.jobs.sending import SubmitRejectedError, send_lease, sent_fields, to_request
from gateway.jobs.staging import Stager, StagingFailed
from gateway.jobs.store import DuplicateIdempotencyKey, InvalidCursor, JobPage, JobQuery, JobStore
from gateway.store.leases import Lease, Leases, LocalLeases, claim
from gateway.units import utcnow

log = logging.getLogger("hpcfed.jobs")
T = TypeVar("T")


class CenterPlan(Protocol):
    """What a job made for an interface of its own (a GA4GH TES task) needs of the center
    it goes to: which centers cannot run it, and its spec as written for one that can."""

    def refusal(self, center: Center) -> list[str] | None:
        """Why `center: auto` may not place the job at `center` (each naming the field);
        None where it may."""

    def render(self, center: Center, spec: JobSpec) -> JobSpec:
        """`spec` as it runs at `center` (DomainError, naming the field, if it cannot)."""


@dataclass(frozen=True)
class SubmitOutcome:
    record: JobRecord
    created: bool  # False when an idempotency key returned an earlier job


class JobService:
    def __init__(
        self,
        store: JobStore,
        centers: CenterRegistry,
        submit_timeout: float,
        placer: Placer,
        leases: Leases | None = None,
        lease_ttl: float = DEFAULT_TTL,
        apps: AppService | None = None,
    ) -> None:
        self.store = store
        #: The application catalog, for jobs of an application (`spec.app`).
        self.apps = apps
        #: The store's leases: `send/<id>` while a job is sent, `stageout/<id>` while its
        #: outputs are collected (renewed every lease_ttl / 3 meanwhile).
        self.leases = leases if leases is not None else LocalLeases()
        self.lease_ttl = lease_ttl
        self.centers = centers
        self.placer = placer
        self.submit_timeout = submit_timeout
        # Gateway ids whose submission is under way; the poller leaves them alone.
        self.in_flight: set[str] = set()
        # Jobs whose cancel reached their center in this process; the poller sends the
        # others (a cancel asked for while the center was down) once it answers again.
        self.cancels_sent: set[str] = set()
        self._tasks: set[asyncio.Task[JobRecord]] = set()
        self.staging = Stager(store, centers, self.leases, lease_ttl)
        #: Each center's run of failed submissions, for its health.
        self.outcomes = SubmissionOutcomes()

    # ------------------------------------------------------------ submit

    async def submit(
        self,
        owner: str,
        spec: JobSpec,
        idempotency_key: str | None = None,
        *,
        plan: CenterPlan | None = None,
        task: dict[str, Any] | None = None,
    ) -> SubmitOutcome:
        """Store and send a job. `plan` writes the spec for the center it goes to, and
        `task` is the document it was made from (both for a GA4GH TES task)."""
        parents = await load_parents(self.store, owner, spec)
        record = await self.new_record(owner, spec, idempotency_key, parents, plan=plan, task=task)
        direct = not spec.inputs and not spec.dependencies
        sending: Lease | None = None
        try:
            if direct:
                # Sent right after it is stored: counted as sent from the start (after a
                # crash in between it is looked up at its center before it is sent again),
                # and left by every poller to this request meanwhile.
                record.submit_attempts = 1
                self.in_flight.add(record.id)
                sending = await self.leases.acquire(send_lease(record.id), self.lease_ttl)
            await self.store.insert(record)
        except BaseException as exc:
            self.in_flight.discard(record.id)
            if sending is not None:
                await self.leases.release(sending)
            if isinstance(exc, DuplicateIdempotencyKey):
                return SubmitOutcome(exc.existing, created=False)
            raise
        # The submission goes on even if the client goes away mid-request.
        task = self.resume(record, counted=direct, lease=sending)
        if spec.inputs:
            return SubmitOutcome(record, created=True)  # staging may take long: 202 now
        try:
            record = await asyncio.shield(task)
        except SubmitRejectedError as exc:
            raise exc.error from None
        return SubmitOutcome(record, created=True)

    async def new_record(
        self,
        owner: str,
        spec: JobSpec,
        idempotency_key: str | None,
        parents: list[JobRecord],
        active: list[JobRecord] | None = None,
        *,
        plan: CenterPlan | None = None,
        task: dict[str, Any] | None = None,
    ) -> JobRecord:
        """A SUBMITTING record for `spec`, placed and checked (DomainError if it cannot go
        anywhere or may not), not yet stored. `active`: the jobs not yet ended, when the
        caller has them (placement weighs them)."""
        decision: PlacementDecision | None = None
        app_plan = await self._app_plan(spec)
        if app_plan is not None:
            spec = with_app_resources(spec, app_plan.definition)
        if spec.center != "auto":
            center_id = self.centers.get(spec.center).id
        elif parents:
            center_id = parents[0].center  # a job goes where the jobs it waits for are
        else:
            if active is None:
                active = await self.store.active()
            refuse = app_plan.refusal if app_plan is not None else None
            if plan is not None:
                refuse = plan.refusal
            decision = await self.placer.place(owner, spec, active, refuse)
            center_id = decision.chosen
        center = self.centers.get(center_id)
        application: AppRun | None = None
        if app_plan is not None:
            offer = app_plan.chosen(center, placed=decision is not None)
            spec, application = app_run(app_plan, offer, spec)
            if decision is not None:
                decision.explanation += f" {app_plan.explanation(offer)}."
        if plan is not None:
            spec = plan.render(center, spec)
        center.require_available()  # center_unavailable at once while the center is down
        login = center.login_for(owner)  # no_identity_at_center when unmapped there
        check_center(parents, center_id)
        self.staging.check(spec, owner)
        native_dependencies(spec, parents)  # refuses what can never run, before storing
        now = utcnow()
        record = JobRecord(
            id=str(uuid.uuid4()),
            owner=owner,
            center=center_id,
            login=login,
            spec=spec,
            state=JobState.SUBMITTING,
            idempotency_key=idempotency_key,
            placement=decision,
            application=application,
            task=task,
            price=Price(**center.config.price.model_dump()),
            created_at=now,
            updated_at=now,
        )
        record.staging = self.staging.initial(record)
        await self.staging.check_workdir(record)
        return record

    async def _app_plan(self, spec: JobSpec) -> AppPlan | None:
        if spec.app is None:
            return None
        if self.apps is None:
            raise DomainError("not_supported", "app: this gateway has no application catalog")
        return await self.apps.plan(spec.app)

    async def submit_batch(
        self, owner: str, specs: Sequence[JobSpec], idempotency_key: str | None = None
    ) -> list[BatchItem]:
        """Submit independent jobs, each with its own outcome (gateway.jobs.batch)."""
        return await submit_batch(self, owner, specs, idempotency_key)

    def track(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # type: ignore[arg-type]
        task.add_done_callback(self._tasks.discard)  # type: ignore[arg-type]
        return task

    def resume(
        self, record: JobRecord, *, counted: bool = False, lease: Lease | None = None
    ) -> asyncio.Task[JobRecord]:
        """Go on with a stored SUBMITTING record in the background (`counted`: its
        attempt is already counted in `submit_attempts`; `lease`: its `send/<id>`,
        acquired already)."""
        task = asyncio.create_task(self._submit_quietly(record, counted, lease))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _submit_quietly(
        self, record: JobRecord, counted: bool = False, lease: Lease | None = None
    ) -> JobRecord:
        try:
            return await self.submit_at_center(record, counted=counted, lease=lease)
        except SubmitRejectedError as exc:
            if not record.spec.inputs:
                raise  # the submitting request reports it
            log.warning("job %s: %s", record.id, exc)
            return exc.record

    async def submit_at_center(
        self, record: JobRecord, *, counted: bool = False, lease: Lease | None = None
    ) -> JobRecord:
        """Contact the center for a stored SUBMITTING record; never raises for an
        uncertain outcome (the record stays SUBMITTING for the poller). `counted`:
        this attempt is already counted in the record's `submit_attempts`; else
        `record` may be one without its script (`JobStore.active`), as what is sent
        is the whole record the update counting the attempt reads back.

        Done under the job's lease `send/<id>` (`lease`, or acquired here): while
        another replica holds it, that one sends the job and this returns `record`."""
        async with claim(self.leases, send_lease(record.id), self.lease_ttl, lease) as held:
            if held is None:
                log.info("job %s: being sent by another replica", record.id)
                return record
            if lease is None:
                # Claimed just now: another replica may have sent it since it was read.
                current = await self.store.get(record.id)
                if current is None or current.state is not JobState.SUBMITTING:
                    return current or record
                if current.native_id is not None:
                    return current
            return await self._send(record, counted)

    async def _send(self, record: JobRecord, counted: bool) -> JobRecord:
        center = self.centers.get(record.center)
        try:
            parents = await load_parents(self.store, record.owner, record.spec)
            dependencies = native_dependencies(record.spec, parents)
        except DomainError as exc:
            failed = await self.store.update(
                record.id, state=JobState.FAILED, reason=exc.message, finished_at=utcnow()
            )
            raise SubmitRejectedError(exc, failed) from None
        if dependencies is None:
            waiting_for = [p.id for p in parents if p.native_id is None]
            return await self.store.update(
                record.id, reason=f"waiting for job {waiting_for[0]} to reach {center.id}"
            )
        self.in_flight.add(record.id)
        try:
            if record.spec.inputs:
                record, ready = await self.staging.stage_in(record)
                if not ready:
                    return record  # the last upload sends it on
            # Counted once staging is done: only a job that was sent can be at the center.
            if not counted:
                record = await self.store.update(
                    record.id, submit_attempts=record.submit_attempts + 1
                )
            request = to_request(record, center.config.type, dependencies)
            async with asyncio.timeout(self.submit_timeout):
                outcome: str | Exception = await center.adapter_for_job(record).submit(request)
        except Exception as exc:
            outcome = exc
        finally:
            self.in_flight.discard(record.id)
        return await self.settle(record, center.id, outcome)

    async def settle(
        self, record: JobRecord, center_id: str, outcome: str | Exception
    ) -> JobRecord:
        """Store what became of one submission to its center: the native id (QUEUED); an
        unknown outcome (stays SUBMITTING for the poller); or a refusal (FAILED, and
        SubmitRejectedError raised for the submitting request)."""
        if isinstance(outcome, str):
            self.outcomes.succeeded(center_id)
            updated = await self.store.update(record.id, **sent_fields(outcome))
            if updated.cancel_requested:
                await self.cancel_at_center(updated)
            return updated
        if isinstance(outcome, (TimeoutError, CenterUnavailable)):
            reason = (
                f"center {center_id} did not answer: {outcome}"
                if str(outcome)
                else (f"center {center_id} did not answer within {self.submit_timeout:g}s")
            )
            self.outcomes.failed(center_id, reason)
            log.warning(
                "job %s: submission outcome unknown (attempt %d): %s",
                record.id,
                record.submit_attempts,
                reason,
            )
            return await self.store.update(record.id, reason=reason)
        if isinstance(outcome, AdapterError) and not isinstance(outcome, SubmitRejected):
            # The center, not the spec: its host key, the login's key, the job directory.
            self.outcomes.failed(center_id, str(outcome))
        if isinstance(outcome, StagingFailed):
            error = DomainError("staging_failed", str(outcome), "inputs")
        elif isinstance(outcome, AdapterError):
            # SubmitRejected: the scheduler refused. Others: host key or credential
            # problems; the job cannot go there as configured.
            error = adapter_error(outcome)
        else:
            # A fault of ours: fail this job visibly rather than retry it forever.
            log.error("job %s: submission to %s failed", record.id, center_id, exc_info=outcome)
            await self.store.update(
                record.id,
                state=JobState.FAILED,
                reason="internal error while submitting; see the gateway log",
                finished_at=utcnow(),
            )
            raise outcome
        failed = await self.store.update(
            record.id, state=JobState.FAILED, reason=error.message, finished_at=utcnow()
        )
        raise SubmitRejectedError(error, failed) from None

    async def close(self) -> None:
        """Let submissions under way finish (bounded by submit_timeout)."""
        await self.staging.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.submit_timeout + 1)

    # ------------------------------------------------------------ reads

    async def get(self, owner: str | None, job_id: str) -> JobRecord:
        """A job of `owner` (None: any owner). Someone else's job is 'not found'."""
        record = await self.store.get(job_id) if _is_uuid(job_id) else None
        if record is None or (owner is not None and record.owner != owner):
            raise DomainError("not_found", f"job {job_id} not found", "id")
        return record

    async def list(self, query: JobQuery) -> JobPage:
        try:
            return await self.store.list(query)
        except InvalidCursor as exc:
            raise DomainError("invalid_request", f"cursor: {exc}", "cursor") from None

    # ------------------------------------------------------------ cancel

    async def cancel(self, owner: str | None, job_id: str) -> JobRecord:
        record = await self.get(owner, job_id)
        if record.state.is_terminal:
            return record
        record = await self.store.update(record.id, cancel_requested=True)
        if record.native_id is None:
            # Not at the center yet: the submission (or the poller's reconciliation)
            # sees cancel_requested and cancels it there.
            return record
        if self.centers.get(record.center).down is not None:
            return record  # stored as requested: the poller sends it when the center is back
        await self.cancel_at_center(record)
        return record

    async def cancel_at_center(self, record: JobRecord) -> None:
        assert record.native_id is not None
        center = self.centers.get(record.center)
        await center.adapter_for_job(record).cancel(record.native_id, record.id)
        self.cancels_sent.add(record.id)

    # ------------------------------------------------------------ output

    async def output(
        self,
        owner: str | None,
        job_id: str,
        stream: str,
        offset: int,
        limit: int,
        element: int | None = None,
    ) -> tuple[JobRecord, OutputChunk]:
        record = await self.get(owner, job_id)
        if element is not None and (
            record.spec.array is None or element not in array_indices(record.spec.array)
        ):
            raise DomainError(
                "not_found", f"element: job {record.id} has no element {element}", "element"
            )
        if record.spec.array is not None and element is None:
            raise DomainError(
                "invalid_request",
                f"element: this job is an array ({record.spec.array}); name one of its "
                "indices with ?element=",
                "element",
            )
        if record.native_id is None:
            return record, OutputChunk(b"", offset, None, exists=False)
        center = self.centers.get(record.center)
        center.require_available()
        chunk = await center.adapter_for_job(record).read_output(
            record.native_id, record.id, stream, offset=offset, limit=limit, element=element
        )
        return record, chunk


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False
