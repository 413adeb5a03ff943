"""What PBS centers answer, in both dialects: state letters, exit statuses, `qstat`
output, job and array element ids. Pure functions over recorded output.

Torque's `qstat -f` prints `Job Id:` blocks and keeps finished jobs as `C` only
briefly, often without an exit status (Slurm's wrapper never prints one). PBS Pro
answers in JSON and, with `-x`, keeps finished jobs as `F` with their
`Exit_status`. Array ids: `123[].server` for the array, `123[4].server` for an
element (Torque and PBS Pro); Slurm's wrapper prints plain numbers for both, with
nothing to tell an element from any other job.

When a job ran: Torque prints `start_time` and `comp_time`; PBS Pro `stime` and
`obittime` (when the server learned of its end); Slurm's wrapper puts the job's
start in `mtime` and its end in `ctime` (for a running job, the end its time
limit forecasts). All as ctime(3) text ("Tue Dec  1 17:06:12 2026") in the local
time of qstat, which the status commands set to UTC (`adapters.pbs.adapter`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from adapters.base import ArrayElement, JobState, NativeStatus
from adapters.batch.settle import aggregate, as_element, with_times

DIALECTS = ("torque", "pbspro")

#: Torque `job_state` letters (also what Slurm's qstat wrapper prints) -> ours.
TORQUE_STATES: dict[str, JobState] = {
    "Q": JobState.QUEUED,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting: the script ended, files are being staged out
    "C": JobState.COMPLETED,  # completed, however it ended: the exit status decides
    "H": JobState.HELD,
    "W": JobState.QUEUED,  # waiting for its requested start time
    "T": JobState.QUEUED,  # in transit between queues or servers
    "S": JobState.SUSPENDED,
    "U": JobState.UNKNOWN,  # Slurm's wrapper: a Slurm state it has no letter for
}
#: PBS Pro / OpenPBS `job_state` letters -> ours.
PBSPRO_STATES: dict[str, JobState] = {
    "Q": JobState.QUEUED,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting after having run
    "B": JobState.RUNNING,  # an array job with at least one subjob started
    "F": JobState.COMPLETED,  # finished (history), however it ended: Exit_status decides
    "X": JobState.COMPLETED,  # a finished subjob of an array; Exit_status decides
    "H": JobState.HELD,
    "W": JobState.QUEUED,  # waiting for its execution time
    "T": JobState.QUEUED,  # in transit
    "M": JobState.QUEUED,  # moved to another server, where it waits
    "S": JobState.SUSPENDED,
    "U": JobState.SUSPENDED,  # suspended because its workstation became busy
}
STATE_MAPS: dict[str, Mapping[str, JobState]] = {"torque": TORQUE_STATES, "pbspro": PBSPRO_STATES}

#: Negative exit statuses: the server or MOM ended the job, not the job itself.
#: Torque's JOB_EXEC_OVERLIMIT_* and PBS Pro's JOB_EXEC_KILL_* codes. Slurm's
#: wrapper prints no exit status at all: there the job directory's `terminated`
#: marker (job.sh traps the scheduler's SIGTERM) tells a walltime kill.
PBS_EXIT_STATUSES: dict[str, dict[int, tuple[JobState, str]]] = {
    "torque": {
        -10: (JobState.FAILED, "memory limit exceeded (JOB_EXEC_OVERLIMIT_MEM)"),
        -11: (JobState.TIMEOUT, "walltime exceeded (JOB_EXEC_OVERLIMIT_WT)"),
        -12: (JobState.FAILED, "cpu time limit exceeded (JOB_EXEC_OVERLIMIT_CPUT)"),
    },
    "pbspro": {
        -25: (JobState.FAILED, "virtual memory limit exceeded (JOB_EXEC_KILL_VMEM)"),
        -27: (JobState.FAILED, "memory limit exceeded (JOB_EXEC_KILL_MEM)"),
        -28: (JobState.FAILED, "cpu time limit exceeded (JOB_EXEC_KILL_CPUT)"),
        -29: (JobState.TIMEOUT, "walltime exceeded (JOB_EXEC_KILL_WALLTIME)"),
    },
}
_ELEMENT_ID_RE = re.compile(r"^([^.\[\]]+)\[(\d+)\](.*)$")
#: Torque and PBS Pro print every id with its server ("123.server"); Slurm's wrapper
#: prints bare Slurm ids, and its own meaning of mtime and ctime.
_SLURM_WRAPPER_ID_RE = re.compile(r"^\d+$")
#: (start, end) attributes per front end.
TIME_ATTRIBUTES = {
    "torque": ("start_time", "comp_time"),
    "slurm-wrapper": ("mtime", "ctime"),
    "pbspro": ("stime", "obittime"),
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_CTIME_RE = re.compile(r"^\w{3} +(\w{3}) +(\d{1,2}) +(\d{1,2}):(\d{2}):(\d{2}) +(\d{4})$")


def pbs_epoch(value: object) -> float | None:
    """A qstat time -> epoch seconds: ctime(3) text read as UTC (the status commands
    ask qstat for UTC), or epoch digits; None for anything else. Month names are
    matched here, not by strptime, whose names follow the gateway's locale."""
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    match = _CTIME_RE.match(text)
    if match is None or match.group(1) not in _MONTHS:
        return None
    month = _MONTHS.index(match.group(1)) + 1
    day, hour, minute, second, year = (int(g) for g in match.groups()[1:])
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()
    except ValueError:  # no such day
        return None


def _timed(status: NativeStatus, attrs: Mapping[str, object], kind: str) -> NativeStatus:
    start, end = TIME_ATTRIBUTES[kind]
    return with_times(status, pbs_epoch(attrs.get(start, "")), pbs_epoch(attrs.get(end, "")))


def pbs_exit_code(exit_status: int) -> int:
    """PBS reports a job killed by signal N as 256+N; use the shell's 128+N."""
    return 128 + (exit_status - 256) if exit_status > 256 else exit_status


def pbs_status(
    native_id: str, letter: str, exit_status: int | None, reason: str | None, dialect: str
) -> NativeStatus:
    state = STATE_MAPS[dialect].get(letter, JobState.UNKNOWN)
    code = pbs_exit_code(exit_status) if exit_status is not None else None
    if state is JobState.COMPLETED and code is not None:
        known = PBS_EXIT_STATUSES[dialect].get(code)
        if known is not None:
            state, reason = known
        elif code < 0:
            state, reason = JobState.FAILED, f"the job could not run (exit status {code})"
        elif code != 0:
            state = JobState.FAILED
    return NativeStatus(native_id, state, letter, reason, code)


def parse_qstat_blocks(text: str) -> dict[str, dict[str, str]]:
    """Torque `qstat -f`: `Job Id: <id>` then `    name = value` lines; long values
    continue on lines that start with a tab."""
    jobs: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    last = ""
    for line in text.splitlines():
        if match := re.match(r"^Job Id:\s*(\S+)", line):
            current = jobs.setdefault(match.group(1), {})
            last = ""
        elif current is not None and (match := re.match(r"^\s+([\w.]+) = (.*)$", line)):
            last = match.group(1)
            current[last] = match.group(2).strip()
        elif current is not None and last and line.startswith("\t"):
            current[last] += line.strip()
    return jobs


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except ValueError:
        return None


def parse_torque_qstat(text: str) -> dict[str, NativeStatus]:
    statuses = {}
    for job_id, attrs in parse_qstat_blocks(text).items():
        exit_status = _int_or_none(attrs.get("exit_status", ""))
        reason = attrs.get("comment") or None
        status = pbs_status(job_id, attrs.get("job_state", ""), exit_status, reason, "torque")
        kind = "slurm-wrapper" if _SLURM_WRAPPER_ID_RE.match(job_id) else "torque"
        statuses[job_id] = _timed(status, attrs, kind)
    return statuses


def _pbspro_status(job_id: str, attrs: Mapping[str, object]) -> NativeStatus:
    exit_status = _int_or_none(attrs.get("Exit_status", ""))
    reason = str(attrs.get("comment") or "") or None
    status = pbs_status(job_id, str(attrs.get("job_state", "")), exit_status, reason, "pbspro")
    return _timed(status, attrs, "pbspro")


def parse_pbspro_qstat(text: str) -> dict[str, NativeStatus]:
    """PBS Pro / OpenPBS `qstat -f -w` (one attribute a line): `Job Id:` blocks like
    Torque's, with PBS Pro's attribute names. Unlike `-F json`, this form lists every
    job asked about by id (OpenPBS's JSON output keeps only the first)."""
    return {job_id: _pbspro_status(job_id, a) for job_id, a in parse_qstat_blocks(text).items()}


def parse_pbspro_json(text: str) -> dict[str, NativeStatus]:
    """PBS Pro / OpenPBS `qstat -f -F json`: one document, or several printed one after
    another (one `qstat` per id, since a multi-id JSON answer lists only the first id).
    A document without `Jobs` (job history off, or no such job) knows no job."""
    statuses: dict[str, NativeStatus] = {}
    # strict=False: PBS Pro prints raw control characters inside some values.
    decoder = json.JSONDecoder(strict=False)
    at = 0
    while (at := _skip_space(text, at)) < len(text):
        doc, at = decoder.raw_decode(text, at)
        jobs = doc.get("Jobs") if isinstance(doc, dict) else None
        for job_id, attrs in (jobs or {}).items():
            statuses[job_id] = _pbspro_status(job_id, attrs)
    return statuses


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at].isspace():
        at += 1
    return at


def short_id(native_id: str) -> str:
    """'123.server.domain' -> '123', '123[4].server' -> '123[4]': qsub and qstat may
    spell the server part differently."""
    return native_id.split(".", 1)[0]


def element_index(element_id: str) -> tuple[str, int] | None:
    """'123[4].server' -> ('123[]', 4): the array's short id and the element's index."""
    match = _ELEMENT_ID_RE.match(element_id)
    return (f"{match.group(1)}[]", int(match.group(2))) if match else None


def match_ids(
    wanted: Sequence[str], reported: Mapping[str, NativeStatus]
) -> dict[str, NativeStatus]:
    """The statuses of the wanted ids, whatever server suffix qstat prints; an array
    (`123[]`) with the elements qstat listed beside it (`qstat -t`)."""
    by_short = {short_id(k): v for k, v in reported.items()}
    elements: dict[str, list[ArrayElement]] = {}
    for element_id, s in reported.items():
        if (found := element_index(element_id)) is not None:
            array, index = found
            element = replace(as_element(index, s), native_id=element_id)
            elements.setdefault(array, []).append(element)
    statuses = {}
    for native_id in wanted:
        status = reported.get(native_id) or by_short.get(short_id(native_id))
        listed = sorted(elements.get(short_id(native_id), ()), key=lambda e: e.index)
        if listed:
            statuses[native_id] = aggregate(native_id, listed, status)
        elif status is not None:
            statuses[native_id] = replace(status, native_id=native_id)
    return statuses
