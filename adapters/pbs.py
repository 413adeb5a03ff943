"""PBS centers, in two dialects: Torque (and Slurm's Torque-compatible commands) and
PBS Pro / OpenPBS. Batch scripts, qsub/qstat/qdel, state mapping.

Builders and parsers are pure; `JobDirAdapter` runs them over SSH. Torque's
`qstat -f` prints `Job Id:` blocks and keeps finished jobs as `C` only briefly,
often without an exit status (Slurm's wrapper never prints one), so the job
directory's `exit_code` file settles how a job ended. PBS Pro answers in JSON
and, with `-x`, keeps finished jobs as `F` with their `Exit_status`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence

from adapters.base import CenterUnavailable, JobRequest, JobState, NativeStatus
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
#: PBS Pro's Exit_status for a job killed at its walltime (JOB_EXEC_KILL_WALLTIME).
PBSPRO_WALLTIME_EXIT = -29


def pbs_exit_code(exit_status: int) -> int:
    """PBS reports a job killed by signal N as 256+N; use the shell's 128+N."""
    return 128 + (exit_status - 256) if exit_status > 256 else exit_status


def pbs_status(
    native_id: str, letter: str, exit_status: int | None, reason: str | None, dialect: str
) -> NativeStatus:
    state = STATE_MAPS[dialect].get(letter, JobState.UNKNOWN)
    code = pbs_exit_code(exit_status) if exit_status is not None else None
    if state is JobState.COMPLETED and code is not None:
        if dialect == "pbspro" and exit_status == PBSPRO_WALLTIME_EXIT:
            state = JobState.TIMEOUT
        elif code != 0:
            state = JobState.FAILED
    return NativeStatus(native_id, state, letter, reason, code)


def pbs_walltime(seconds: int) -> str:
    hours, rest = divmod(max(1, seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


# ------------------------------------------------------------ script builder


def _safe_name(name: str) -> str:
    # PBS job names: at most 15 characters in Torque, starting with a letter.
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return (cleaned if cleaned[:1].isalpha() else "j" + cleaned)[:15]


def _torque_nodes(job: JobRequest) -> str:
    spec = f"{job.nodes}:ppn={job.tasks_per_node * job.cpus_per_task}"
    return spec + (f":gpus={job.gpus_per_node}" if job.gpus_per_node else "")


def _pbspro_select(job: JobRequest) -> str:
    spec = (
        f"{job.nodes}:ncpus={job.tasks_per_node * job.cpus_per_task}:mpiprocs={job.tasks_per_node}"
    )
    if job.memory_per_node_mib:
        spec += f":mem={job.memory_per_node_mib}mb"
    if job.gpus_per_node:
        spec += f":ngpus={job.gpus_per_node}"
    return spec


def _walltime(job: JobRequest) -> str | None:
    return pbs_walltime(job.walltime_seconds) if job.walltime_seconds else None


def _torque_mem(job: JobRequest) -> str | None:
    # Torque's `mem` is the whole job's memory, not one node's.
    return f"{job.memory_per_node_mib * job.nodes}mb" if job.memory_per_node_mib else None


#: (directive flag, resource name or "", how to render the value); None skips the line.
_Render = Callable[[JobRequest, str | None], "str | None"]
PBS_DIRECTIVES: dict[str, tuple[tuple[str, str, _Render], ...]] = {
    "torque": (
        ("-N", "", lambda j, q: _safe_name(j.name)),
        ("-l", "nodes", lambda j, q: _torque_nodes(j)),
        ("-l", "walltime", lambda j, q: _walltime(j)),
        ("-l", "mem", lambda j, q: _torque_mem(j)),
        ("-q", "", lambda j, q: q),
        ("-A", "", lambda j, q: j.account),
    ),
    "pbspro": (
        ("-N", "", lambda j, q: _safe_name(j.name)),
        ("-l", "select", lambda j, q: _pbspro_select(j)),
        ("-l", "walltime", lambda j, q: _walltime(j)),
        ("-q", "", lambda j, q: q),
        ("-A", "", lambda j, q: j.account),
    ),
}


def build_pbs_script(
    job: JobRequest, jobdir: JobDir, home: str, dialect: str, default_queue: str | None = None
) -> str:
    queue = job.queue or default_queue
    lines = ["#!/bin/bash"]
    for flag, resource, render in PBS_DIRECTIVES[dialect]:
        value = render(job, queue)
        if value is None:
            continue
        head = f"#PBS {flag} {resource}=" if resource else f"#PBS {flag} "
        lines.append(directive(head, value))
    # Some PBS front ends ignore -o/-e (Slurm's qsub writes <script>.o<id> beside the
    # script), so the job sends its own output into the job directory.
    out, err = quote(jobdir.file(STDOUT)), quote(jobdir.file(STDERR))
    lines += ["", f"exec >>{out} 2>>{err}"]
    return "\n".join(lines) + "\n" + render_body(job, jobdir, home)


# ------------------------------------------------------------ commands and parsers


def build_qstat_command(native_ids: Sequence[str], dialect: str) -> str:
    ids = " ".join(quote(i) for i in native_ids)
    if dialect == "pbspro":
        return f"qstat -f -F json -x {ids}"
    return f"qstat -f {ids}"


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
        statuses[job_id] = pbs_status(
            job_id, attrs.get("job_state", ""), exit_status, reason, "torque"
        )
    return statuses


def parse_pbspro_json(text: str) -> dict[str, NativeStatus]:
    if not text.strip():
        return {}
    # strict=False: PBS Pro prints raw control characters inside some values.
    jobs = json.loads(text, strict=False).get("Jobs") or {}
    statuses = {}
    for job_id, attrs in jobs.items():
        exit_status = _int_or_none(attrs.get("Exit_status", ""))
        reason = attrs.get("comment") or None
        statuses[job_id] = pbs_status(
            job_id, str(attrs.get("job_state", "")), exit_status, reason, "pbspro"
        )
    return statuses


def short_id(native_id: str) -> str:
    """'123.server.domain' -> '123', '123[4].server' -> '123[4]': qsub and qstat may
    spell the server part differently."""
    return native_id.split(".", 1)[0]


def match_ids(
    wanted: Sequence[str], reported: Mapping[str, NativeStatus]
) -> dict[str, NativeStatus]:
    by_short = {short_id(k): v for k, v in reported.items()}
    found = {}
    for native_id in wanted:
        status = reported.get(native_id) or by_short.get(short_id(native_id))
        if status is not None:
            found[native_id] = NativeStatus(
                native_id, status.state, status.native_state, status.reason, status.exit_code
            )
    return found


def build_qdel_command(native_id: str, jobdir: JobDir) -> str:
    return f"qdel {quote(native_id)} && {cancelled_marker_command(jobdir)}"


def qdel_refused_because_finished(result: CommandResult) -> bool:
    said = (result.stdout + result.stderr).decode(errors="replace")
    if not said.strip():  # Slurm's qdel: silent non-zero exit for finished or unknown jobs
        return True
    return any(
        text in said
        for text in ("Unknown Job Id", "Job has finished", "invalid for state", "already done")
    )


class PbsAdapter(JobDirAdapter):
    """A PBS center (Torque or PBS Pro dialect) reached over SSH."""

    scheduler = "qsub"

    def __init__(
        self,
        target: SSHTarget,
        pool: SSHPool,
        *,
        work_root: str = "~/.hpcfed",
        default_queue: str | None = None,
        dialect: str = "torque",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"PBS dialect must be one of {DIALECTS}, got {dialect!r}")
        super().__init__(target, pool, work_root=work_root, default_queue=default_queue)
        self.dialect = dialect

    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str:
        return build_pbs_script(job, jobdir, home, self.dialect, self.default_queue)

    def submit_command(self, jobdir: JobDir) -> str:
        return submit_command(jobdir, "qsub")

    def status_command(self, native_ids: Sequence[str]) -> str:
        return build_qstat_command(native_ids, self.dialect)

    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        # 153 is PBS's "unknown job id": some asked-about jobs are gone, the rest are listed.
        if result.exit_status not in (0, 153):
            raise CenterUnavailable(
                f"center {self.center_id}: qstat failed (exit {result.exit_status}): "
                f"{result.stderr.decode(errors='replace').strip()[:300]}",
                center=self.center_id,
            )
        text = result.stdout.decode(errors="replace")
        parse = parse_pbspro_json if self.dialect == "pbspro" else parse_torque_qstat
        return match_ids(native_ids, parse(text))

    def cancel_command(self, native_id: str, jobdir: JobDir) -> str:
        return build_qdel_command(native_id, jobdir)

    def already_gone(self, result: CommandResult) -> bool:
        return qdel_refused_because_finished(result)
