"""The check that holds the production status path to what the center says per job.

A burst of jobs goes in with one batched submission: two that end at once ('exit 0',
'exit 3'), a blocker that holds a whole node (or all its account may hold) until the
check releases it, and three that want as much and so wait behind it (one ends
'exit 0', one 'exit 4', one is cancelled while it waits). They are tracked as the
poller tracks users' jobs: every round one `status_many` over all of them at once (the
jobs the gateway holds ended are no longer asked about), what an answer reports
replaces what was known, and a job an answer leaves out (or cannot account for) keeps
its last state.

Each round also asks the center about every job alone (`adapters.batch.truth.ask_one`: the
scheduler's per-job answer and the job directory's markers). Twice (while the
blocker runs, and once every job ended) the gateway's view is compared with the
center's, job by job; any difference that persists over a second look refuses the
center, naming the job, what the gateway said and what the center said. Whatever
happens, the check ends with none of its jobs queued or running at the center.
How the two views are compared is gateway/centers/evaluation/agreement.py.
"""

from __future__ import annotations

import asyncio
import posixpath
import uuid
from collections.abc import Callable, Sequence

from adapters.base import JobRequest, JobState, PartitionLoad
from adapters.batch.truth import JobTruth, ask_one, history_settings
from adapters.errors import AdapterError
from adapters.limits import ReportsLimits
from gateway.centers.account_limits import limit_failures
from gateway.centers.evaluation.agreement import Tracked, accounts_for, disagreement, shown
from gateway.centers.evaluation.context import (
    CALL_TIMEOUT,
    CLEANUP_TIMEOUT,
    CheckFailed,
    Context,
    Evidence,
    bounded,
    quietly,
)
from gateway.centers.evaluation.files import upload
from gateway.centers.evaluation.jobs import JOB_NAME, POLL_INTERVAL, Job
from gateway.jobs.models import JobSpec

#: How long the gateway's view may lag the center's before a difference counts: a
#: status answer a round old, or a job directory whose exit marker is being written.
AGREE_WITHIN = 10.0
#: The file whose appearance in the evaluation directory ends the blocker.
RELEASE = "burst.release"
#: A job of the burst: its label, its request, how it should end.
Wanted = tuple[str, JobRequest, tuple[JobState, "int | None"]]


class Burst:
    """The burst's jobs, one batched status query and one per-job query each per round."""

    def __init__(self, ctx: Context, ev: Evidence) -> None:
        self.ctx = ctx
        self.ev = ev
        self.tracked: list[Tracked] = []
        self.rounds = 0

    @property
    def jobs(self) -> list[Job]:
        return [t.job for t in self.tracked]

    def record(self) -> None:
        self.ev["jobs"] = [t.evidence() for t in self.tracked]
        self.ev["rounds"] = self.rounds

    async def submit(self, wanted: Sequence[Wanted]) -> None:
        """All of them in one `submit_many`, as a batch of users' jobs goes."""
        requests = [request for _, request, _ in wanted]
        self.ev["submitted"] = [
            {"job": label, "run": request.script, "cpus": request.cpus_per_task}
            for label, request, _ in wanted
        ]
        # Shielded: a submission abandoned half-way is let finish, so that the jobs it
        # made are found (by gateway id) and cancelled.
        sending = asyncio.ensure_future(self.ctx.adapter.submit_many(requests))
        try:
            outcomes: list[str | Exception] = await bounded(
                asyncio.shield(sending), "submitting the burst"
            )
        except BaseException:
            await quietly(
                self._withdraw(sending, requests), "withdrawing the burst", self.ctx.center_id
            )
            raise
        refused = []
        for (label, request, expect), outcome in zip(wanted, outcomes, strict=True):
            if isinstance(outcome, str):
                job = Job(label, request.gateway_id, outcome)
                self.tracked.append(Tracked(job, expect))
            else:
                refused.append((label, request, outcome))
        self.record()
        if refused:
            # An unknown outcome may still have made a job: found by its gateway id.
            found = await bounded(
                self.ctx.adapter.find_by_gateway_id([r.gateway_id for _, r, _ in refused]),
                "looking up the jobs of the burst",
            )
            for _, request, _ in refused:
                if (native_id := found.get(request.gateway_id)) is not None:
                    self.tracked.append(
                        Tracked(
                            Job("unsure", request.gateway_id, native_id), (JobState.CANCELLED, None)
                        )
                    )
            said = "; ".join(f"{label}: {getattr(o, 'message', o)}" for label, _, o in refused)
            raise CheckFailed(f"the burst was not accepted: {said}")

    async def _withdraw(
        self, sending: asyncio.Future[list[str | Exception]], requests: Sequence[JobRequest]
    ) -> None:
        """Cancel the jobs of a burst submission whose answer the check did not get."""
        try:
            outcomes: list[str | Exception] = await sending
        except Exception:
            outcomes = [CheckFailed("unknown")] * len(requests)
        unknown = [
            r.gateway_id for r, o in zip(requests, outcomes, strict=True) if not isinstance(o, str)
        ]
        found = await self.ctx.adapter.find_by_gateway_id(unknown) if unknown else {}
        for request, outcome in zip(requests, outcomes, strict=True):
            native_id = outcome if isinstance(outcome, str) else found.get(request.gateway_id)
            if native_id is not None:
                await self.ctx.adapter.cancel(native_id, request.gateway_id)

    async def round(self) -> None:
        """One poller tick over the burst, then the center asked about each job alone."""
        ctx = self.ctx
        active = [t for t in self.tracked if not (t.derived and t.derived.state.is_terminal)]
        if active:
            answer = await bounded(
                ctx.adapter.status_many({t.job.native_id: t.job.gateway_id for t in active}),
                "the batched status query",
            )
            for t in active:
                status = answer.get(t.job.native_id)
                t.last_answer = status
                t.asked += 1
                if accounts_for(status):
                    assert status is not None
                    t.job.status = status
                    if status.state.value not in t.job.seen:
                        t.job.seen.append(status.state.value)
                else:
                    t.missing += 1  # the poller keeps what it knew
        await self.ask_center(
            [t for t in self.tracked if t.truth is None or t.truth.phase != "ended"]
        )
        self.rounds += 1

    async def ask_center(self, which: Sequence[Tracked]) -> None:
        for t, truth in zip(which, await self.ask_alone(which), strict=True):
            t.truth = truth

    async def ask_alone(self, which: Sequence[Tracked]) -> list[JobTruth]:
        """The center's per-job answers about `which`, asked side by side."""
        return await asyncio.gather(
            *(
                bounded(
                    ask_one(self.ctx.adapter, t.job.native_id, t.job.gateway_id),
                    f"the per-job query of {t.job.native_id}",
                )
                for t in which
            )
        )

    async def until(self, ready: Callable[[], bool], what: str, limit: float) -> None:
        """Rounds until `ready` holds at the center (bounded by `limit`), then until the
        gateway agrees about every job or AGREE_WITHIN has passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            await self.round()
            if ready():
                break
            if loop.time() >= deadline:
                self.record()
                now = ", ".join(
                    f"{t.label} {t.truth.status.state.value if t.truth else 'unasked'}"
                    for t in self.tracked
                )
                raise CheckFailed(f"{what} not seen at the center within {limit:g}s ({now})")
            await asyncio.sleep(POLL_INTERVAL)
        settled_by = loop.time() + AGREE_WITHIN
        while self.disagreements(final=False) and loop.time() < settled_by:
            await asyncio.sleep(POLL_INTERVAL)
            await self.round()

    def disagreements(self, final: bool) -> dict[str, str]:
        out = {}
        for t in self.tracked:
            why = disagreement(t, final)
            if why is not None:
                out[t.job.native_id] = f"{t.label} (job {t.job.native_id}): {why}"
        return out

    async def compare(self, when: str, final: bool = False) -> None:
        """Refuse, with the evidence, what differs now and still differs a round later."""
        first = self.disagreements(final)
        if first:
            await asyncio.sleep(POLL_INTERVAL)
            await self.round()
        lasting = {nid: why for nid, why in self.disagreements(final).items() if nid in first}
        self.ev.setdefault("compared", []).append(
            {"when": when, "disagreements": list(lasting.values())}
        )
        self.record()
        if lasting:
            raise CheckFailed(
                f"{when}, the gateway's batched status disagrees with the center: "
                + "; ".join(lasting.values())
            )

    async def clean_up(self) -> list[str]:
        """Cancel every job the center does not say has ended (the waiting ones first, so
        that none starts on what a cancelled one frees), then check that none is left
        queued or running; the jobs left, in words. What the comparisons found stays as
        it was."""
        ctx = self.ctx
        live = [t for t in self.tracked if t.truth is None or t.truth.phase != "ended"]
        for t in reversed(live):
            await quietly(
                ctx.adapter.cancel(t.job.native_id, t.job.gateway_id),
                f"cancelling evaluation job {t.job.native_id}",
                ctx.center_id,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLEANUP_TIMEOUT
        left: list[tuple[Tracked, JobTruth | None]] = [(t, None) for t in live]
        while left:
            try:
                truths = await self.ask_alone([t for t, _ in left])
            except Exception as exc:  # cannot tell: say so rather than claim a clean end
                return [
                    f"{t.label} (job {t.job.native_id}): not confirmed ({exc})" for t, _ in left
                ]
            left = [
                (t, truth)
                for (t, _), truth in zip(left, truths, strict=True)
                if truth.phase in ("queued", "running")
            ]
            if not left or loop.time() >= deadline:
                break
            await asyncio.sleep(POLL_INTERVAL)
        return [
            f"{t.label} (job {t.job.native_id}): {truth.status.state.value if truth else '?'}"
            for t, truth in left
        ]


def _node_partition(partitions: Sequence[PartitionLoad], queue: str | None) -> PartitionLoad:
    usable = [p for p in partitions if p.available and p.cores_per_node > 0]
    chosen = [p for p in usable if p.name == queue] or [p for p in usable if p.default] or usable
    if not chosen:
        raise CheckFailed("no available partition to run the burst in")
    return chosen[0]


async def _blocker_cores(ctx: Context, partition: PartitionLoad, walltime: int) -> int:
    """The cores of a node the blocker takes: all of them, or as many as the service
    login's account may hold at once where the center enforces accounting limits (a
    blocker over its account's `GrpTRES` would wait for ever). The jobs that wait
    behind it then wait for the node or for the account's limit: behind it either way."""
    cores = partition.cores_per_node
    adapter = ctx.adapter
    if not isinstance(adapter, ReportsLimits):
        return cores
    try:
        limits = await bounded(adapter.account_limits(), "the account limits query")
    except AdapterError:  # not known now: the scheduler still enforces its own
        return cores

    def refused(n: int) -> bool:
        spec = JobSpec.model_validate(
            {"command": "true", "resources": {"cpus_per_task": n, "walltime": walltime}}
        )
        return bool(limit_failures(ctx.center_id, limits, spec))

    while cores > 1 and refused(cores):
        cores -= 1
    return cores


def blocker_script(limit_seconds: float) -> str:
    """Hold the node until the check writes RELEASE beside it, for at most the limit."""
    rounds = max(1, int(limit_seconds * 5))
    return (
        f'n=0; while [ ! -e {RELEASE} ] && [ "$n" -lt {rounds} ]; do sleep 0.2; n=$((n+1)); done\n'
        f"[ -e {RELEASE} ]\n"
    )


async def jobs_batched_status(ctx: Context, ev: Evidence) -> str:
    history = await bounded(history_settings(ctx.adapter), "the job-history query")
    ev["history"] = {
        "keeps_history": history.keeps_history,
        "asked": history.command,
        "said": history.said,
        "implication": history.implication,
    }
    load = await bounded(ctx.power.load(ctx.center_id), "the scheduler's load query")
    partition = _node_partition(load.partitions, ctx.center.config.scheduler.default_queue)
    walltime = max(60, int(ctx.admission.job_timeout))
    cores = await _blocker_cores(ctx, partition, walltime)
    ev.update(
        partition=partition.name, cores_per_node=partition.cores_per_node, blocker_cores=cores
    )
    if cores < 2:
        raise CheckFailed(
            f"partition {partition.name}: the service login may use {cores} core(s) of a "
            "node at once: no blocker fits"
        )
    workdir = await ctx.workdir_full()

    def request(script: str, cpus: int) -> JobRequest:
        return JobRequest(
            gateway_id=str(uuid.uuid4()),
            name=JOB_NAME,
            script=script,
            cpus_per_task=cpus,
            working_dir=workdir,
            walltime_seconds=walltime,
        )

    wanted = [
        ("exit 0", request("exit 0\n", 1), (JobState.COMPLETED, 0)),
        ("exit 3", request("exit 3\n", 1), (JobState.FAILED, 3)),
        (
            "blocker",
            request(blocker_script(ctx.admission.job_timeout), cores),
            (JobState.COMPLETED, 0),
        ),
        ("queued, exit 0", request("exit 0\n", cores), (JobState.COMPLETED, 0)),
        ("queued, exit 4", request("exit 4\n", cores), (JobState.FAILED, 4)),
        ("queued, cancelled", request("sleep 60\n", cores), (JobState.CANCELLED, None)),
    ]
    burst = Burst(ctx, ev)
    ok = False
    try:
        await burst.submit(wanted)
        by = {t.label: t for t in burst.tracked}

        def blocker_holds() -> bool:
            ended = all(by[k].truth and by[k].truth.phase == "ended" for k in ("exit 0", "exit 3"))
            blocker = by["blocker"].truth
            return ended and blocker is not None and blocker.phase == "running"

        await burst.until(
            blocker_holds, "the blocker running and the short jobs ended", ctx.admission.job_timeout
        )
        waiting = [t.label for t in burst.tracked if t.truth and t.truth.phase == "queued"]
        ev["queued_behind_blocker"] = waiting
        await burst.compare("while the blocker held the node")

        victim = by["queued, cancelled"]
        victim.cancelled_while = victim.truth.status.native_state if victim.truth else None
        await bounded(ctx.adapter.cancel(victim.job.native_id, victim.job.gateway_id), "the cancel")
        await upload(
            ctx.files, posixpath.join(await ctx.workdir(), RELEASE), [b"go\n"], CALL_TIMEOUT
        )

        def all_ended() -> bool:
            return all(t.truth and t.truth.phase == "ended" for t in burst.tracked)

        await burst.until(all_ended, "the end of every job", ctx.admission.job_timeout)
        await burst.compare("once every job had ended", final=True)
        wrong = [
            f"{t.label} ended {shown(t.derived)}, expected {t.expect[0].value}"
            + ("" if t.expect[1] is None else f"/{t.expect[1]}")
            for t in burst.tracked
            if t.derived is None
            or (t.derived.state, t.derived.exit_code if t.expect[1] is not None else None)
            != t.expect
        ]
        if wrong:
            raise CheckFailed("; ".join(wrong))
        ok = True
    finally:
        left = await burst.clean_up()
        ev["left_at_center"] = left
        burst.record()
        if left and ok:
            raise CheckFailed(
                "still queued or running at the center after the check: " + "; ".join(left)
            )
    queued = ", ".join(waiting) or "none (the center ran them at once)"
    return (
        f"{len(burst.tracked)} jobs in one submission, tracked by {burst.rounds} batched status "
        f"queries: every state and exit code agreed with the center's per-job answers "
        f"(queued behind the blocker: {queued}); {history.implication}"
    )
