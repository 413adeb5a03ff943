"""Slurm centers: batch scripts, sbatch/squeue/sacct/scancel, state mapping.

Builders and parsers here are pure functions of their inputs (testable on
recorded output); `JobDirAdapter` runs them over the pooled SSH connection.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence

from adapters.base import (
    CenterUnavailable,
    JobRequest,
    JobState,
    NativeStatus,
)
from adapters.batch import JobDirAdapter
from adapters.jobdir import (
    STDERR,
    STDOUT,
    JobDir,
    cancelled_marker_command,
    directive,
    quote,
    render_body,
    submit_command,
)
from adapters.ssh import CommandResult, SSHPool, SSHTarget

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
#: The job's exit code means something only when its script ran to an end.
_EXIT_CODE_STATES = frozenset({JobState.COMPLETED, JobState.FAILED})

SQUEUE_FIELDS = "JobID:|,State:|,Reason:|,exit_code:|,Comment:"  # comment last: it is free text
SACCT_FIELDS = "JobID,State,ExitCode,Reason"
GATEWAY_COMMENT = "hpcfed:"
_SLURM_ID_RE = re.compile(r"^\d+(?:_\d+)?$")


def slurm_state(native: str, reason: str | None = None) -> JobState:
    """Map a native state ("CANCELLED by 1001" as sacct prints it) to ours."""
    base = native.split()[0] if native.strip() else ""
    state = SLURM_STATES.get(base.rstrip("+"), JobState.UNKNOWN)
    if state is JobState.QUEUED and reason in HOLD_REASONS:
        return JobState.HELD
    return state


def wait_status_exit_code(raw: int) -> int:
    """A wait(2) status as squeue prints it -> a shell-style exit code."""
    signal = raw & 0x7F
    return 128 + signal if signal else (raw >> 8) & 0xFF


def slurm_time(seconds: int) -> str:
    """Walltime seconds -> Slurm's D-HH:MM:SS."""
    days, rest = divmod(max(1, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


# ------------------------------------------------------------ script builder


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64] or "job"


#: Normalized field -> (sbatch flag, how to render its value); None skips the line.
_Directive = Callable[[JobRequest, JobDir, str | None], "str | None"]
SBATCH_DIRECTIVES: tuple[tuple[str, _Directive], ...] = (
    ("--job-name", lambda j, d, q: _safe_name(j.name)),
    ("--comment", lambda j, d, q: GATEWAY_COMMENT + j.gateway_id),  # reconciles lost replies
    ("--output", lambda j, d, q: d.file(STDOUT)),
    ("--error", lambda j, d, q: d.file(STDERR)),
    ("--chdir", lambda j, d, q: d.path),
    ("--nodes", lambda j, d, q: str(j.nodes)),
    ("--ntasks-per-node", lambda j, d, q: str(j.tasks_per_node)),
    ("--cpus-per-task", lambda j, d, q: str(j.cpus_per_task)),
    ("--mem", lambda j, d, q: f"{j.memory_per_node_mib}M" if j.memory_per_node_mib else None),
    ("--time", lambda j, d, q: slurm_time(j.walltime_seconds) if j.walltime_seconds else None),
    ("--partition", lambda j, d, q: q),
    ("--account", lambda j, d, q: j.account),
    ("--gres", lambda j, d, q: _gres(j)),
)


def _gres(job: JobRequest) -> str | None:
    if not job.gpus_per_node:
        return None
    kind = f"gpu:{job.gpu_type}" if job.gpu_type else "gpu"
    return f"{kind}:{job.gpus_per_node}"


def build_sbatch_script(
    job: JobRequest, jobdir: JobDir, home: str, default_queue: str | None = None
) -> str:
    queue = job.queue or default_queue
    lines = ["#!/bin/bash"]
    for flag, render in SBATCH_DIRECTIVES:
        value = render(job, jobdir, queue)
        if value is not None:
            lines.append(directive(f"#SBATCH {flag}=", value))
    return "\n".join(lines) + "\n\n" + render_body(job, jobdir, home)


# ------------------------------------------------------------ commands and parsers


def build_squeue_command(login: str) -> str:
    return f"squeue -h -t all -u {quote(login)} -O {quote(SQUEUE_FIELDS)}"


def parse_squeue(text: str) -> dict[str, NativeStatus]:
    statuses: dict[str, NativeStatus] = {}
    for line in text.splitlines():
        fields = line.split("|", 4)
        if len(fields) < 4 or not _SLURM_ID_RE.match(fields[0].strip()):
            continue
        native_id, native, reason, raw_exit = (f.strip() for f in fields[:4])
        reason_or_none = None if reason in ("", "None", "(null)") else reason
        state = slurm_state(native, reason_or_none)
        code = None
        if state in _EXIT_CODE_STATES and raw_exit.isdigit():
            code = wait_status_exit_code(int(raw_exit))
        statuses[native_id] = NativeStatus(native_id, state, native, reason_or_none, code)
    return statuses


def parse_squeue_comments(text: str) -> dict[str, str]:
    """gateway id -> native id, from the comment every job of ours carries."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split("|", 4)
        if len(fields) == 5 and fields[4].strip().startswith(GATEWAY_COMMENT):
            found[fields[4].strip()[len(GATEWAY_COMMENT) :]] = fields[0].strip()
    return found


def build_sacct_command(native_ids: Sequence[str]) -> str:
    ids = ",".join(quote(i) for i in native_ids)
    return f"sacct -X --parsable2 --noheader --format={SACCT_FIELDS} -j {ids}"


def parse_sacct(text: str) -> dict[str, NativeStatus]:
    statuses: dict[str, NativeStatus] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3 or not _SLURM_ID_RE.match(fields[0]):
            continue
        native_id, native, exit_code = fields[0], fields[1], fields[2]
        reason = fields[3] if len(fields) > 3 and fields[3] not in ("", "None") else None
        state = slurm_state(native, reason)
        code = None
        match = re.fullmatch(r"(\d+):(\d+)", exit_code)
        if match and state in _EXIT_CODE_STATES:
            status, signal = int(match.group(1)), int(match.group(2))
            code = 128 + signal if signal else status
        statuses[native_id] = NativeStatus(native_id, state, native.split()[0], reason, code)
    return statuses


def build_cancel_command(native_id: str, jobdir: JobDir) -> str:
    # The marker is written only once scancel accepted, so a refused cancel leaves no trace.
    return f"scancel {quote(native_id)} && {cancelled_marker_command(jobdir)}"


def cancel_refused_because_finished(stderr: str) -> bool:
    return "already completing or completed" in stderr or "Invalid job id" in stderr


class SlurmAdapter(JobDirAdapter):
    """A Slurm center reached over SSH."""

    scheduler = "sbatch"
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

    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str:
        return build_sbatch_script(job, jobdir, home, self.default_queue)

    def submit_command(self, jobdir: JobDir) -> str:
        return submit_command(jobdir, "sbatch --parsable")

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

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        if time.monotonic() < self._sacct_off_until:
            return None
        return build_sacct_command(native_ids)

    def parse_accounting(self, text: str, stderr: str) -> dict[str, NativeStatus]:
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
