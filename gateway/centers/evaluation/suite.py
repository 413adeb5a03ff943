"""The access evaluation suite (version SUITE_VERSION): its checks in order, what
each depends on, and the runner that takes a record from RUNNING to its verdict.

Checks run stage by stage; the checks of one stage run concurrently (the job
checks mostly wait on the scheduler). A check whose dependency did not pass is
skipped, naming it. Anything a check raises fails that check only; the record
is saved after every check so that a reader sees the progress.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from adapters.errors import AdapterError, CommandFailed
from gateway.centers.configured import Center
from gateway.centers.evaluation import burst, checks, files, hpl, jobs
from gateway.centers.evaluation.context import CheckFailed, Context, Evidence, PowerSource
from gateway.centers.evaluation.models import SUITE_VERSION, CheckResult, EvaluationRecord
from gateway.centers.evaluation.verdict import judge
from gateway.config_models import AdmissionConfig
from gateway.errors import DomainError
from gateway.units import utcnow

log = logging.getLogger("hpcfed.evaluation")

CheckFn = Callable[[Context, Evidence], Awaitable[str]]
Save = Callable[[EvaluationRecord], Awaitable[object]]
LOCAL_NO_SSH = "local center: no SSH"


@dataclass(frozen=True)
class Check:
    name: str
    title: str
    weight: float
    required: bool
    run: CheckFn
    needs: tuple[str, ...] = ()  # checks that must have passed (or not applied)
    ssh: bool = False  # does not apply at a local center
    jobs: int = 0  # job waits in a row it may make (each up to admission.job_timeout)

    def budget(self, admission: AdmissionConfig) -> float:
        """The longest the whole check may take."""
        return 120.0 + self.jobs * admission.job_timeout


_SSH = ("ssh.login",)
_SCHEDULER = ("scheduler.responding",)

#: Suite version "3", in report order. Weights sum to 100.
CHECKS: tuple[Check, ...] = (
    Check("ssh.connect", "TCP reachability of the SSH port", 5, True, checks.ssh_connect, ssh=True),
    Check(
        "ssh.host_key",
        "the host key presented is pinned in the center config",
        10,
        True,
        checks.ssh_host_key,
        ("ssh.connect",),
        ssh=True,
    ),
    Check(
        "ssh.login",
        "the service login authenticates with its key from the vault",
        10,
        True,
        checks.ssh_login,
        ("ssh.host_key",),
        ssh=True,
    ),
    Check(
        "scheduler.responding",
        "the scheduler answers a load query",
        10,
        True,
        checks.scheduler_responding,
        _SSH,
    ),
    Check(
        "descriptor.valid",
        "the computing-power descriptor validates against its schema",
        5,
        True,
        checks.descriptor_valid,
        _SCHEDULER,
    ),
    Check(
        "descriptor.complete",
        "hardware figures, price and energy configured; a partition available",
        5,
        False,
        checks.descriptor_complete,
        ("descriptor.valid",),
    ),
    Check(
        "jobs.round_trip",
        "submit, see QUEUED or RUNNING, cancel, see CANCELLED",
        5,
        True,
        jobs.jobs_round_trip,
        _SCHEDULER,
        jobs=2,
    ),
    Check(
        "jobs.exit_codes",
        "'exit 0' ends COMPLETED/0 and 'exit 3' ends FAILED/3",
        5,
        True,
        jobs.jobs_exit_codes,
        _SCHEDULER,
        jobs=1,
    ),
    Check(
        "files.staging",
        "1 MiB in, checksummed by a job, the result read back",
        10,
        True,
        files.files_staging,
        _SCHEDULER,
        jobs=1,
    ),
    Check(
        "jobs.output",
        "a job's stdout is read back as it was printed",
        5,
        True,
        jobs.jobs_output,
        _SCHEDULER,
        jobs=1,
    ),
    Check(
        "compute.hpl",
        "HPL (hpcc) on one node's cores of the default partition",
        5,
        False,
        hpl.compute_hpl,
        _SCHEDULER,
        jobs=1,
    ),
    Check(
        "jobs.batched_status",
        "a burst of jobs tracked by the batched status query agrees with the center per job",
        10,
        True,
        burst.jobs_batched_status,
        _SCHEDULER,
        ssh=True,  # a local center has no batch scheduler to hold it to
        jobs=2,
    ),
    Check(
        "ssh.latency",
        "20 round trips of 'true' over the pooled connection",
        5,
        False,
        checks.ssh_latency,
        _SSH,
        ssh=True,
    ),
    Check(
        "files.bandwidth",
        "32 MiB up and down through the files API, sha256 verified",
        10,
        False,
        files.files_bandwidth,
        _SSH,
    ),
)
BY_NAME = {check.name: check for check in CHECKS}
#: Checks of one stage run together; stages run in order. The job checks share a
#: stage; latency and bandwidth run alone so that nothing else skews them.
STAGES: tuple[tuple[str, ...], ...] = (
    ("ssh.connect",),
    ("ssh.host_key",),
    ("ssh.login",),
    ("scheduler.responding",),
    ("descriptor.valid",),
    ("descriptor.complete",),
    ("jobs.round_trip", "jobs.exit_codes", "files.staging", "jobs.output", "compute.hpl"),
    # Alone: its blocker holds a whole node, which the other job checks would wait for.
    ("jobs.batched_status",),
    ("ssh.latency",),
    ("files.bandwidth",),
)
assert [n for stage in STAGES for n in stage] == list(BY_NAME)
assert sum(c.weight for c in CHECKS) == 100


def pending_checks() -> list[CheckResult]:
    """The suite's checks as a new record lists them, all pending."""
    return [
        CheckResult(name=c.name, title=c.title, weight=c.weight, required=c.required)
        for c in CHECKS
    ]


def blocked_by(check: Check, results: dict[str, CheckResult]) -> str | None:
    """Why `check` cannot run: the message of its first dependency that did not pass."""
    for name in check.needs:
        dep = results[name]
        if dep.state == "passed" or not dep.applicable:
            continue
        if dep.state == "skipped":
            return dep.message  # the cause further up, e.g. "skipped: ssh.connect failed"
        return f"skipped: {name} {dep.state}"
    return None


def _failure(exc: Exception, ev: Evidence) -> str:
    if isinstance(exc, CheckFailed):
        return exc.message
    if isinstance(exc, CommandFailed):
        ev["failed_command"] = {
            "command": exc.command,
            "exit_status": exc.exit_status,
            "stderr": exc.stderr[-1000:],
        }
        return exc.message
    if isinstance(exc, AdapterError | DomainError):
        return exc.message
    if isinstance(exc, OSError):
        return f"{type(exc).__name__}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


class SuiteRun:
    """One run of the suite against one center, filling one record."""

    def __init__(
        self,
        record: EvaluationRecord,
        center: Center,
        power: PowerSource,
        admission: AdmissionConfig,
        save: Save,
    ) -> None:
        self.record = record
        self.admission = admission
        self.save = save
        login = center.service_login()
        self.ctx = Context(center, power, admission, record.id, login, record.figures)
        self.results = {r.name: r for r in record.checks}

    async def run(self) -> None:
        record = self.record
        record.suite_version = SUITE_VERSION
        record.thresholds = self.admission.model_dump(mode="json")
        if not record.checks:
            record.checks = pending_checks()
            self.results = {r.name: r for r in record.checks}
        try:
            for stage in STAGES:
                # return_exceptions: when the run is cancelled, wait for every check of
                # the stage to finish its clean-up (cancel its jobs), not just the first.
                outcomes = await asyncio.gather(
                    *(self._one(BY_NAME[name]) for name in stage), return_exceptions=True
                )
                for outcome in outcomes:
                    if isinstance(outcome, BaseException):
                        raise outcome
        finally:
            await self.ctx.cleanup()
        judgement = judge(record.checks, record.figures, self.admission)
        record.score, record.verdict, record.reasons = (
            judgement.score,
            judgement.verdict,
            judgement.reasons,
        )

    async def _one(self, check: Check) -> None:
        result = self.results[check.name]
        if check.ssh and self.ctx.is_local:
            result.state, result.applicable, result.message = "skipped", False, LOCAL_NO_SSH
            await self.save(self.record)
            return
        blocker = blocked_by(check, self.results)
        if blocker is not None:
            result.state, result.message = "skipped", blocker
            await self.save(self.record)
            return
        result.state = "running"
        await self.save(self.record)
        started = time.monotonic()
        budget = check.budget(self.admission)
        try:
            async with asyncio.timeout(budget):
                result.message = await check.run(self.ctx, result.evidence)
            result.state = "passed"
        except TimeoutError as exc:
            over = time.monotonic() - started >= budget
            why = f"did not finish within {budget:g}s" if over else f"timed out: {exc}"
            result.state, result.message = "failed", why
        except Exception as exc:
            if not isinstance(exc, CheckFailed | AdapterError | DomainError | OSError):
                log.exception("evaluation %s: check %s raised", self.record.id, check.name)
            result.state, result.message = "failed", _failure(exc, result.evidence)
        finally:
            result.duration_seconds = round(time.monotonic() - started, 3)
        result.message = " ".join(result.message.split())  # one line, e.g. of a stderr
        log.info(
            "evaluation %s of %s: %s %s: %s",
            self.record.id,
            self.record.center,
            check.name,
            result.state,
            result.message,
        )
        await self.save(self.record)


def new_record(evaluation_id: str, center_id: str, user: str) -> EvaluationRecord:
    return EvaluationRecord(
        id=evaluation_id,
        center=center_id,
        requested_by=user,
        checks=pending_checks(),
        created_at=utcnow(),
    )
