"""Slurm's answers about jobs: squeue and sacct commands, their parsers, and the
state mapping. Pure functions of their inputs, testable on recorded output.

An array job's id is the array's ("123"); squeue lists its elements as "123_4" and
its pending ones as ranges ("123_[5-7%2]"), which become one status for "123" with
every element. sbatch reports a walltime kill as TIMEOUT itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from adapters.base import ArrayElement, JobState, NativeStatus
from adapters.batch.jobdir import array_indices
from adapters.batch.settle import aggregate, as_element, never_started, with_times
from adapters.transport.framing import quote

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
SLURM_ID_RE = re.compile(r"^\d+(?:_\d+)?$")
#: A job id as squeue and sacct print it; the bracket holds pending elements.
_LISTED_ID_RE = re.compile(r"^(\d+)(?:_(\d+)|_\[([0-9,:%-]+)\])?$")


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
