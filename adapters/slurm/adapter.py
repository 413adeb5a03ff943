"""Slurm centers: batch scripts, sbatch/squeue/sacct/scancel, state mapping.

Builders and parsers here are pure functions of their inputs (testable on
recorded output); `JobDirAdapter` runs them over the pooled SSH connection.

An array job's id is the array's ("123"); squeue lists its elements as
"123_4" and its pending ones as ranges ("123_[5-7%2]"), which become one status
for "123" with every element. sbatch reports a walltime kill as TIMEOUT itself;
sbatch's refusals come on stderr (see `adapters.batch.adapter.rejections`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from adapters.base import ArrayElement, CenterLoad, JobRequest, JobState, NativeStatus
from adapters.batch.adapter import JobDirAdapter, ping_failed
from adapters.batch.jobdir import (
    STDERR,
    STDOUT,
    JobDir,
    SpecRefused,
    array_indices,
    cancelled_marker_command,
    directive,
    grouped_dependencies,
    quote,
    render_body,
    reserved_directive,
)
from adapters.batch.markers import aggregate, as_element, never_started, with_times
from adapters.batch.rejections import (
    SLURM_REJECTIONS,
    no_association,
    refused_field,
    scheduler_message,
)
from adapters.errors import CenterUnavailable, CommandFailed
from adapters.limits import AccountLimits
from adapters.slurm.limits import build_limits_command, parse_limits
from adapters.slurm.load import build_load_command, parse_load
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

#: Every Slurm job state (squeue %T / sacct State) -> the normalized state.
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,  # nodes allocated but booting: user code not started
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,  # finished, epilogs running: final state not known yet
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED,
    "NODE_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,  # preempted and not requeued: it will not resume
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.TIMEOUT,  # killed at its --deadline: a time limit too
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,  # SIGSTOPped, keeps its allocation
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.HELD,
    "REQUEUE_FED": JobState.QUEUED,
    "SPECIAL_EXIT": JobState.HELD,  # requeued and held after a special exit value
    "RESV_DEL_HOLD": JobState.HELD,  # its reservation was deleted
    "RESIZING": JobState.RUNNING,
    "REVOKED": JobState.CANCELLED,  # a federation sibling started elsewhere; this copy ends
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,  # burst buffer stage-out after the script ended
    "POWER_UP_NODE": JobState.QUEUED,
    "LAUNCH_FAILED": JobState.FAILED,
}
#: Pending reasons that mean somebody holds the job, not that it waits for resources.
HOLD_REASONS = frozenset({"JobHeldUser", "JobHeldAdmin"})
#: Reasons a job waits for (squeue %r / sacct Reason). Slurm keeps the last one on the
#: record of a job cancelled while pending ("CANCELLED" with "AssocGrpCpuLimit"), where it
#: no longer applies. Reasons that explain an end (NonZeroExitCode, TimeLimit, NodeDown,
#: DependencyNeverSatisfied, ...) are kept.
_WAITING_REASON_RE = re.compile(
    r"^(Assoc|QOS|Partition|Resv|ReqNodeNotAvail|BurstBuffer|Licenses|FrontEnd)"
)
_WAITING_REASONS = frozenset(
    {
        "Resources",
        "Priority",
        "Dependency",
        "BeginTime",
        "JobHeldUser",
        "JobHeldAdmin",
        "Reservation",
        "JobArrayTaskLimit",
        "PowerUpNode",
        "InvalidAccount",
        "InvalidQOS",
        "AccountNotAllowed",
    }
)
#: The job's exit code means something only when its script ran to an end.
_EXIT_CODE_STATES = frozenset({JobState.COMPLETED, JobState.FAILED})

#: JobArrayID: "123" for a plain job, "123_4" for an element, "123_[5-7%2]" for pending
#: elements. StartTime/EndTime: when it started and ended running (a pending job's start
#: and a running one's end are forecasts). The comment comes last: it is free text.
SQUEUE_FIELDS = "JobArrayID:|,State:|,Reason:|,exit_code:|,StartTime:|,EndTime:|,Comment:"
SACCT_FIELDS = "JobID,State,ExitCode,Reason,Start,End"
#: Slurm prints times ("2026-12-01T17:00:00") in the local time of the command, the
#: center's zone, which the gateway does not know. The status commands ask for epoch
#: seconds instead (as `adapters.slurm.adapter.load` does), so no zone is ever guessed, neither
#: the center's nor that of the gateway's machine.
_TIME_ENV = "SLURM_TIME_FORMAT=%s"
_EPOCH_RE = re.compile(r"[0-9]{1,12}")
GATEWAY_COMMENT = "hpcfed:"
_SLURM_ID_RE = re.compile(r"^\d+(?:_\d+)?$")
#: A job id as squeue and sacct print it; the bracket holds pending elements.
_LISTED_ID_RE = re.compile(r"^(\d+)(?:_(\d+)|_\[([0-9,:%-]+)\])?$")

#: sbatch options an extra directive may not set: they would move the job's output or
#: directory, or replace the comment that finds a job whose submit reply was lost.
#: Arrays and dependencies have fields of their own.
RESERVED_SBATCH = (
    "-o",
    "--output",
    "-e",
    "--error",
    "-D",
    "--chdir",
    "--comment",
    "-a",
    "--array",
    "-d",
    "--dependency",
    "--open-mode",
)


def slurm_state(native: str, reason: str | None = None) -> JobState:
    """Map a native state ("CANCELLED by 1001" as sacct prints it) to ours."""
    base = native.split()[0] if native.strip() else ""
    state = SLURM_STATES.get(base.rstrip("+"), JobState.UNKNOWN)
    if state is JobState.QUEUED and reason in HOLD_REASONS:
        return JobState.HELD
    return state


def current_reason(state: JobState, reason: str | None) -> str | None:
    """The reason as it applies to the job's state: none of waiting on an ended job."""
    if reason is None or not state.is_terminal:
        return reason
    if reason in _WAITING_REASONS or _WAITING_REASON_RE.match(reason):
        return None
    return reason


def wait_status_exit_code(raw: int) -> int:
    """A wait(2) status as squeue prints it -> a shell-style exit code."""
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def slurm_epoch(text: str) -> float | None:
    """A time squeue or sacct printed under `_TIME_ENV` -> epoch seconds; None for
    "N/A", "Unknown", "None" and anything else (a local time the format was not
    applied to is not read in some guessed zone)."""
    text = text.strip()
    return float(text) if _EPOCH_RE.fullmatch(text) and int(text) > 0 else None


def _with_slurm_times(status: NativeStatus, start: str, end: str) -> NativeStatus:
    started, ended = slurm_epoch(start), slurm_epoch(end)
    if status.state is JobState.CANCELLED:
        started = never_started(started, ended)  # Slurm's stamp on a cancel while pending
    return with_times(status, started, ended)


def slurm_time(seconds: int) -> str:
    """Walltime seconds -> Slurm's D-HH:MM:SS."""
    days, rest = divmod(max(1, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


# ------------------------------------------------------------ script builder


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "job"


def _output(job: JobRequest, jobdir: JobDir, stream: str) -> str:
    # sbatch expands %a to the element's index: each element writes stdout.<index>.
    return jobdir.file(stream) + (".%a" if job.array is not None else "")


#: Normalized field -> (sbatch flag, how to render its value); None skips the line.
_Directive = Callable[[JobRequest, JobDir, str | None], "str | None"]
SBATCH_DIRECTIVES: tuple[tuple[str, _Directive], ...] = (
    ("--job-name", lambda j, d, q: _safe_name(j.name)),
    ("--comment", lambda j, d, q: GATEWAY_COMMENT + j.gateway_id),  # reconciles lost replies
    ("--output", lambda j, d, q: _output(j, d, STDOUT)),
    ("--error", lambda j, d, q: _output(j, d, STDERR)),
    ("--chdir", lambda j, d, q: d.path),
    ("--nodes", lambda j, d, q: str(j.nodes)),
    ("--ntasks-per-node", lambda j, d, q: str(j.tasks_per_node)),
    ("--cpus-per-task", lambda j, d, q: str(j.cpus_per_task)),
    ("--mem", lambda j, d, q: f"{j.memory_per_node_mib}M" if j.memory_per_node_mib else None),
    ("--time", lambda j, d, q: slurm_time(j.walltime_seconds) if j.walltime_seconds else None),
    ("--partition", lambda j, d, q: q),
    ("--account", lambda j, d, q: j.account),
    ("--qos", lambda j, d, q: j.qos),
    ("--gres", lambda j, d, q: _gres(j)),
    ("--array", lambda j, d, q: j.array),  # the spec's syntax is sbatch's, "%N" included
    ("--dependency", lambda j, d, q: grouped_dependencies(j.dependencies)),
)


def _gres(job: JobRequest) -> str | None:
    if not job.gpus_per_node:
        return None
    kind = f"gpu:{job.gpu_type}" if job.gpu_type else "gpu"
    return f"{kind}:{job.gpus_per_node}"


def check_sbatch_job(job: JobRequest) -> None:
    """What sbatch cannot be asked for as given (beyond what every scheduler refuses)."""
    for i, arg in enumerate(job.extra_directives):
        if reserved_directive(arg, RESERVED_SBATCH):
            raise SpecRefused(
                f"extra_directives.slurm[{i}]",
                f"extra directive {arg!r} would override how the gateway runs the job "
                f"(it sets {', '.join(o for o in RESERVED_SBATCH if o.startswith('--'))})",
            )


def build_sbatch_script(
    job: JobRequest, jobdir: JobDir, home: str, default_queue: str | None = None
) -> str:
    check_sbatch_job(job)
    queue = job.queue or default_queue
    lines = ["#!/bin/bash"]
    for flag, render in SBATCH_DIRECTIVES:
        value = render(job, jobdir, queue)
        if value is not None:
            lines.append(directive(f"#SBATCH {flag}=", value))
    # Verbatim: validated to hold nothing sbatch's directive parser would unquote.
    lines += [f"#SBATCH {arg}" for arg in job.extra_directives]
    return "\n".join(lines) + "\n\n" + render_body(job, jobdir, home)


# ------------------------------------------------------------ commands and parsers


def build_squeue_command(login: str) -> str:
    return f"{_TIME_ENV} squeue -h -t all -u {quote(login)} -O {quote(SQUEUE_FIELDS)}"


def _pending_indices(ranges: str) -> list[int]:
    """ "2-3", "1,3,5-7", "0-14:2", "2-3%1" (a limit of elements running at once)."""
    try:
        return array_indices(ranges)
    except ValueError:
        return []


def _group(rows: list[tuple[str, NativeStatus]]) -> dict[str, NativeStatus]:
    """Rows keyed by the ids squeue/sacct print -> one status per job; an array's
    elements (pending ranges expanded) gathered under the array's id."""
    statuses: dict[str, NativeStatus] = {}
    elements: dict[str, dict[int, ArrayElement]] = {}
    for listed_id, status in rows:
        match = _LISTED_ID_RE.match(listed_id)
        if match is None:
            continue
        job_id, index, pending = match.groups()
        if index is None and pending is None:
            statuses[job_id] = status
            continue
        found = elements.setdefault(job_id, {})
        for i in [int(index)] if index is not None else _pending_indices(pending):
            found[i] = replace(as_element(i, status), native_id=f"{job_id}_{i}")
    for job_id, found in elements.items():
        statuses[job_id] = aggregate(job_id, [found[i] for i in sorted(found)])
    return statuses


def parse_squeue(text: str) -> dict[str, NativeStatus]:
    rows = []
    for line in text.splitlines():
        fields = line.split("|", 6)
        if len(fields) < 6:
            continue
        listed_id, native, reason, raw_exit, start, end = (f.strip() for f in fields[:6])
        reason_or_none = None if reason in ("", "None", "(null)") else reason
        state = slurm_state(native, reason_or_none)
        code = None
        if state in _EXIT_CODE_STATES and raw_exit.isdigit():
            code = wait_status_exit_code(int(raw_exit))
        status = NativeStatus(listed_id, state, native, current_reason(state, reason_or_none), code)
        rows.append((listed_id, _with_slurm_times(status, start, end)))
    return _group(rows)


def parse_squeue_comments(text: str) -> dict[str, str]:
    """gateway id -> native id (an array's own id for its elements), from the comment
    every job of ours carries."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("|", 6)
        match = _LISTED_ID_RE.match(fields[0].strip())
        if match and len(fields) == 7 and fields[6].strip().startswith(GATEWAY_COMMENT):
            found[fields[6].strip()[len(GATEWAY_COMMENT) :]] = match.group(1)
    return found


def build_sacct_command(native_ids: Sequence[str]) -> str:
    ids = ",".join(quote(i) for i in native_ids)
    return f"{_TIME_ENV} sacct -X --parsable2 --noheader --format={SACCT_FIELDS} -j {ids}"


def parse_sacct(text: str) -> dict[str, NativeStatus]:
    rows = []
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        listed_id, native, exit_code = fields[0], fields[1], fields[2]
        reason = fields[3] if len(fields) > 3 and fields[3] not in ("", "None") else None
        state = slurm_state(native, reason)
        code = None
        match = re.fullmatch(r"(\d+):(\d+)", exit_code)
        if match and state in _EXIT_CODE_STATES:
            status, signal = int(match.group(1)), int(match.group(2))
            code = 128 + signal if signal else status
        start, end = (fields[i] if len(fields) > i else "" for i in (4, 5))
        found = NativeStatus(
            listed_id, state, native.split()[0], current_reason(state, reason), code
        )
        rows.append((listed_id, _with_slurm_times(found, start, end)))
    return _group(rows)


def build_cancel_command(native_id: str, jobdir: JobDir) -> str:
    # The marker is written only once scancel accepted, so a refused cancel leaves no trace.
    return f"scancel {quote(native_id)} && {cancelled_marker_command(jobdir)}"


def cancel_refused_because_finished(stderr: str) -> bool:
    return "already completing or completed" in stderr or "Invalid job id" in stderr


#: The health probe: "Slurmctld(primary) at host is UP" (or DOWN) per controller.
PING_COMMAND = "scontrol ping"


def slurmctld_up(text: str) -> bool:
    """Whether `scontrol ping` says some controller is UP."""
    return re.search(r"\bis UP\b", text) is not None


def sbatch_rejection(
    result: CommandResult, job: JobRequest, login: str = "", center: str | None = None
) -> tuple[str, str | None]:
    """What sbatch said and the spec field it points at; a login without an association
    at the center gets a message saying so and the field `center` (the spec asked for
    nothing wrong: the center has not granted this login an account)."""
    said = scheduler_message(result.stdout, result.stderr)
    if login and (unassociated := no_association(said, job, login, center)) is not None:
        return unassociated, "center"
    return said, refused_field(said, SLURM_REJECTIONS, job, "slurm")


class SlurmAdapter(JobDirAdapter):
    """A Slurm center reached over SSH."""

    scheduler = "sbatch"
    submit_tool = "sbatch --parsable"
    family = "slurm"
    _NATIVE_ID_RE = _SLURM_ID_RE

    def __init__(
        self,
        target: SSHTarget,
        pool: SSHPool,
        *,
        work_root: str = "~/.hpcfed",
        default_queue: str | None = None,
    ) -> None:
        super().__init__(target, pool, work_root=work_root, default_queue=default_queue)
        self._sacct_off_until = 0.0  # sacct is skipped until then after it said it is off

    def check_job(self, job: JobRequest) -> None:
        super().check_job(job)
        check_sbatch_job(job)

    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str:
        return build_sbatch_script(job, jobdir, home, self.default_queue)

    def rejection(self, result: CommandResult, job: JobRequest) -> tuple[str, str | None]:
        return sbatch_rejection(result, job, self.target.login, self.center_id)

    def status_command(self, native_ids: Sequence[str]) -> str:
        return build_squeue_command(self.target.login)

    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        if result.exit_status != 0:  # never read an empty listing from a failing squeue as "gone"
            raise CenterUnavailable(
                f"center {self.center_id}: squeue failed (exit {result.exit_status}): "
                f"{result.stderr.decode(errors='replace').strip()[:300]}",
                center=self.center_id,
            )
        return parse_squeue(result.stdout.decode(errors="replace"))

    def element_native_id(self, array_id: str, index: int, started: str | None) -> str:
        return f"{array_id}_{index}"  # what squeue, sacct and scancel call an element

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        if time.monotonic() < self._sacct_off_until:
            return None
        return build_sacct_command(native_ids)

    def parse_accounting(
        self, text: str, stderr: str, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        if "accounting storage is disabled" in stderr or "slurmdbd" in stderr:
            self._sacct_off_until = time.monotonic() + 600.0  # ask again in a while, not per tick
        return parse_sacct(text)

    def cancel_command(self, native_id: str, jobdir: JobDir) -> str:
        return build_cancel_command(native_id, jobdir)

    def already_gone(self, result: CommandResult) -> bool:
        return cancel_refused_because_finished(result.stderr.decode(errors="replace"))

    def listing_command(self) -> str | None:
        return build_squeue_command(self.target.login)

    def parse_listing(self, text: str) -> dict[str, str]:
        return parse_squeue_comments(text)

    def load_command(self) -> str | None:
        return build_load_command()

    async def ping(self) -> None:
        # Not counted in remote_commands: that counts the job and status traffic.
        result = await self.connection.run(PING_COMMAND)
        if result.exit_status != 0 or not slurmctld_up(result.stdout.decode(errors="replace")):
            raise ping_failed(self.center_id, PING_COMMAND, result)

    def parse_load(self, result: CommandResult, queried_at: float) -> CenterLoad:
        return parse_load(result.stdout.decode(errors="replace"), queried_at)

    async def account_limits(self) -> AccountLimits | None:
        """This login's associations and QoS limits (`adapters.slurm.adapter.limits`); None at a
        cluster without slurmdbd. Not counted in remote_commands, as `ping` is not."""
        command = build_limits_command(self.target.login)
        queried_at = time.time()
        result = await self.connection.run(command)
        if result.exit_status != 0:
            raise CommandFailed(
                f"center {self.center_id}: the accounting limits query failed "
                f"(exit {result.exit_status}): "
                f"{result.stderr.decode(errors='replace').strip()[:300]}",
                command=command,
                exit_status=result.exit_status,
                stderr=result.stderr.decode(errors="replace"),
                center=self.center_id,
            )
        return parse_limits(result.stdout.decode(errors="replace"), self.target.login, queried_at)
