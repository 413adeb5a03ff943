"""The checks that run jobs: submit/status/cancel round trip, exit codes, output
retrieval, and the helpers they share (the compute probe, HPL, is in hpl.py).

Every job is small and bounded: its walltime and the wait for it are
`admission.job_timeout`; each remote call is bounded by CALL_TIMEOUT; a job
that a check leaves behind unfinished is cancelled before the check ends.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.base import JobRequest, JobState, NativeStatus
from gateway.centers.evaluation.context import CheckFailed, Context, Evidence, bounded, quietly

JOB_NAME = "hpcfed-eval"
POLL_INTERVAL = 0.5  # seconds between status queries while a check waits for a job


@dataclass
class Job:
    """A job a check submitted, and what it has been seen doing."""

    label: str
    gateway_id: str
    native_id: str
    seen: list[str] = field(default_factory=list)  # states in the order first seen
    status: NativeStatus | None = None

    @property
    def state(self) -> JobState | None:
        return self.status.state if self.status else None

    @property
    def ended(self) -> bool:
        return self.status is not None and self.status.state.is_terminal

    def evidence(self) -> dict[str, Any]:
        status = self.status
        return {
            "job": self.label,
            "gateway_id": self.gateway_id,
            "native_id": self.native_id,
            "states": list(self.seen),
            "native_state": status.native_state if status else None,
            "exit_code": status.exit_code if status else None,
        }


async def submit(
    ctx: Context,
    ev: Evidence,
    jobs: list[Job],
    label: str,
    *,
    script: str | None = None,
    command: str | None = None,
    arguments: Iterable[str] = (),
    working_dir: str | None = None,
    environment: Mapping[str, str] | None = None,
    tasks_per_node: int = 1,
    queue: str | None = None,
) -> Job:
    request = JobRequest(
        gateway_id=str(uuid.uuid4()),
        name=JOB_NAME,
        script=script,
        command=command,
        arguments=tuple(arguments),
        working_dir=working_dir,
        environment=dict(environment or {}),
        walltime_seconds=max(60, int(ctx.admission.job_timeout)),
        tasks_per_node=tasks_per_node,
        queue=queue,
    )
    shown = script if script is not None else " ".join((command or "", *request.arguments))
    ev.setdefault("submitted", []).append({"job": label, "run": shown})
    # Shielded: a submission abandoned half-way (a timeout, the gateway stopping) is
    # let finish, so that the job it may have made is found and cancelled.
    submitting = asyncio.ensure_future(ctx.adapter.submit(request))
    try:
        native_id = await bounded(asyncio.shield(submitting), f"submitting the {label} job")
    except BaseException:
        await quietly(
            _withdraw(ctx, submitting, request.gateway_id),
            f"withdrawing evaluation job {request.gateway_id}",
            ctx.center_id,
        )
        raise
    job = Job(label, request.gateway_id, native_id)
    jobs.append(job)  # the check's list: whatever happens next, it cancels what is unfinished
    ev.setdefault("jobs", []).append(job.evidence())
    return job


async def _withdraw(ctx: Context, submitting: asyncio.Future[str], gateway_id: str) -> None:
    """Cancel the job of a submission that did not return its id to its check."""
    try:
        native_id: str | None = await submitting
    except Exception:  # its outcome is unknown: ask the center
        native_id = (await ctx.adapter.find_by_gateway_id([gateway_id])).get(gateway_id)
    if native_id is not None:
        await ctx.adapter.cancel(native_id, gateway_id)


async def wait_until(ctx: Context, jobs: list[Job], done: Callable[[Job], bool], what: str) -> None:
    """Poll the jobs' status (one batched query each time) until `done` holds for
    every one, for at most `admission.job_timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.admission.job_timeout
    wanted = {job.native_id: job.gateway_id for job in jobs}
    while True:
        statuses = await bounded(ctx.adapter.status_many(wanted), "the status query")
        for job in jobs:
            status = statuses.get(job.native_id)
            if status is not None:
                job.status = status
                if status.state.value not in job.seen:
                    job.seen.append(status.state.value)
        if all(done(job) for job in jobs):
            return
        if loop.time() >= deadline:
            states = ", ".join(f"{j.label} {j.state or 'not listed'}" for j in jobs)
            raise CheckFailed(
                f"{what} not seen within {ctx.admission.job_timeout:g}s (last: {states})"
            )
        await asyncio.sleep(POLL_INTERVAL)


async def run_to_end(ctx: Context, ev: Evidence, jobs: list[Job]) -> None:
    try:
        await wait_until(ctx, jobs, lambda j: j.ended, "the end of the job(s)")
    finally:
        record(ev, jobs)


def record(ev: Evidence, jobs: Iterable[Job]) -> None:
    ev["jobs"] = [job.evidence() for job in jobs]


async def cancel_unfinished(ctx: Context, jobs: Iterable[Job]) -> None:
    """Cancel what a check leaves running (it failed, or the gateway is stopping)."""
    for job in jobs:
        if not job.ended:
            await quietly(
                ctx.adapter.cancel(job.native_id, job.gateway_id),
                f"cancelling evaluation job {job.native_id}",
                ctx.center_id,
            )


def expect_end(job: Job, state: JobState, exit_code: int) -> None:
    status = job.status
    if status is None or (status.state, status.exit_code) != (state, exit_code):
        got = f"{status.state.value}/{status.exit_code}" if status else "no status"
        raise CheckFailed(f"the {job.label} job ended {got}, expected {state.value}/{exit_code}")


# ------------------------------------------------------------------ the checks


async def jobs_round_trip(ctx: Context, ev: Evidence) -> str:
    jobs: list[Job] = []
    try:
        job = await submit(ctx, ev, jobs, "sleep", command="sleep", arguments=["60"])
        await wait_until(
            ctx,
            [job],
            lambda j: j.ended or j.state in (JobState.QUEUED, JobState.RUNNING),
            "QUEUED or RUNNING",
        )
        if job.ended:
            raise CheckFailed(f"'sleep 60' ended {job.state} before it was cancelled")
        before = job.state
        await bounded(ctx.adapter.cancel(job.native_id, job.gateway_id), "the cancel")
        await wait_until(ctx, [job], lambda j: j.ended, "the end after the cancel")
        if job.state is not JobState.CANCELLED:
            raise CheckFailed(f"the cancelled job ended {job.state}, not CANCELLED")
    finally:
        record(ev, jobs)
        await cancel_unfinished(ctx, jobs)
    return f"job {job.native_id} was seen {before}, cancelled, and seen CANCELLED"


async def jobs_exit_codes(ctx: Context, ev: Evidence) -> str:
    jobs: list[Job] = []
    try:
        # Both submissions settle before anything is judged, so neither job is left unknown.
        outcomes = await asyncio.gather(
            submit(ctx, ev, jobs, "exit 0", script="exit 0\n"),
            submit(ctx, ev, jobs, "exit 3", script="exit 3\n"),
            return_exceptions=True,
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        zero, three = (o for o in outcomes if isinstance(o, Job))
        await run_to_end(ctx, ev, [zero, three])
        expect_end(zero, JobState.COMPLETED, 0)
        expect_end(three, JobState.FAILED, 3)
    finally:
        await cancel_unfinished(ctx, jobs)
    return "'exit 0' ended COMPLETED/0 and 'exit 3' ended FAILED/3"


async def run_one_job(ctx: Context, ev: Evidence, label: str, **how: Any) -> Job:
    """Submit one job and wait until it has ended COMPLETED/0."""
    jobs: list[Job] = []
    try:
        job = await submit(ctx, ev, jobs, label, **how)
        await run_to_end(ctx, ev, [job])
        expect_end(job, JobState.COMPLETED, 0)
    finally:
        await cancel_unfinished(ctx, jobs)
    return job


async def jobs_output(ctx: Context, ev: Evidence) -> str:
    token = secrets.token_hex(16)
    job = await run_one_job(ctx, ev, "echo", command="echo", arguments=[token])
    chunk = await bounded(
        ctx.adapter.read_output(job.native_id, job.gateway_id, "stdout"), "reading the output"
    )
    said = chunk.data.decode(errors="replace")
    ev.update(token=token, stdout=said[:200], stdout_size=chunk.size)
    if said.strip() != token:
        raise CheckFailed(f"stdout was {said[:80]!r}, expected the token {token}")
    return f"stdout of job {job.native_id} is the token it was given"
