"""The checks that run jobs: submit/status/cancel round trip, exit codes, output
retrieval and the compute probe, and the helpers they share.

Every job is small and bounded: its walltime and the wait for it are
`admission.job_timeout`; each remote call is bounded by CALL_TIMEOUT; a job
that a check leaves behind unfinished is cancelled before the check ends.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.base import JobRequest, JobState, NativeStatus
from gateway.centers.evaluation.context import CheckFailed, Context, Evidence, bounded, quietly
from gateway.centers.evaluation.verdict import num, threshold_failures

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


#: A fixed kernel that times itself and prints one JSON line: numpy's matmul where
#: numpy is importable, else a multiply-add loop in Python, else the same in awk.
PROBE_SCRIPT = r"""export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if command -v python3 >/dev/null 2>&1 && python3 -c 'import numpy' >/dev/null 2>&1; then
python3 - <<'HPCFED_KERNEL'
import json, time
import numpy as np
n = 768
rng = np.random.default_rng(0)
a, b = rng.random((n, n)), rng.random((n, n))
c = a @ b
best = float("inf")
for _ in range(3):
    t = time.perf_counter()
    c = a @ b
    best = min(best, time.perf_counter() - t)
print(json.dumps({"kernel": f"numpy-matmul-{n}", "flop": 2 * n**3, "seconds": best}))
HPCFED_KERNEL
elif command -v python3 >/dev/null 2>&1; then
python3 - <<'HPCFED_KERNEL'
import json, time
n, x, y = 1_000_000, 0.999999, 1e-6
best = float("inf")
for _ in range(3):
    s, t = 0.0, time.perf_counter()
    for _ in range(n):
        s = s * x + y
    best = min(best, time.perf_counter() - t)
print(json.dumps({"kernel": "python-multiply-add", "flop": 2 * n, "seconds": best}))
HPCFED_KERNEL
else
n=1000000
t0=$(date +%s%N)
awk -v n=$n 'BEGIN { s = 0; for (i = 0; i < n; i++) s = s * 0.999999 + 1e-6; print s }' >/dev/null
t1=$(date +%s%N)
awk -v n=$n -v t0="$t0" -v t1="$t1" 'BEGIN {
  printf "{\"kernel\": \"awk-multiply-add\", \"flop\": %d, ", 2 * n
  printf "\"seconds\": %.6f}\n", (t1 - t0) / 1e9 }'
fi
"""


def parse_probe(stdout: str) -> tuple[str, float, float]:
    """(kernel, flop, seconds) from the probe's last JSON line."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            doc = json.loads(line)
            kernel, flop, seconds = str(doc["kernel"]), float(doc["flop"]), float(doc["seconds"])
        except (ValueError, KeyError, TypeError):
            continue
        if flop > 0 and seconds > 0:
            return kernel, flop, seconds
    raise CheckFailed(f"the probe printed no result line: {stdout[-200:]!r}")


async def compute_probe(ctx: Context, ev: Evidence) -> str:
    job = await run_one_job(ctx, ev, "compute probe", script=PROBE_SCRIPT)
    chunk = await bounded(
        ctx.adapter.read_output(job.native_id, job.gateway_id, "stdout"), "reading the output"
    )
    stdout = chunk.data.decode(errors="replace")
    ev["stdout"] = stdout[-500:]
    kernel, flop, seconds = parse_probe(stdout)
    gflops = round(flop / seconds / 1e9, 4)
    ctx.figures.gflops_per_core, ctx.figures.kernel = gflops, kernel
    ev.update(kernel=kernel, flop=flop, seconds=seconds, gflops_per_core=gflops)
    unmet = threshold_failures(ctx.figures, ctx.admission).get("compute.probe")
    if unmet:
        raise CheckFailed("; ".join(unmet))
    return f"{kernel}: {num(gflops)} GFLOP/s on one core ({num(seconds)} s)"
