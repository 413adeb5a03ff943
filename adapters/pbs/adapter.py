"""PBS centers, in two dialects: Torque (and Slurm's Torque-compatible commands) and
PBS Pro / OpenPBS. Batch scripts, qsub/qstat/qdel; `adapters.pbs.adapter.parse` reads
their answers.

Builders are pure; `JobDirAdapter` runs them over SSH. Everything a job asks for
travels in `#PBS` lines of job.sh, never on the qsub command line: Slurm's
Torque-compatible `qsub` joins its options into one sbatch command line that a
shell runs, so `qsub job.sh` is all it is given.

What the testbed's Slurm 22.05 `qsub` (Torque dialect) honours, run for real:
the wrapper reads no `#PBS` line itself; sbatch does, when it runs job.sh
(`sbatch -vv --test-only` lists what it took):
- `-N`, `-l nodes=N:ppn=P`, `-l walltime=`, `-l mem=`, `-q`, `-A`: honoured.
- `-t 0-3%2` and `-J 0-3`: honoured, an array with its limit of elements at once
  (steps like `0-15:2` are not Torque syntax: we list the indices).
- `-W depend=afterok:1:2,afterany:3`: honoured, as sbatch's --dependency.
- `-l qos=` and `-W x=QOS:` (Moab's form, which Torque passes to its scheduler):
  silently ignored ("Ignored PBS attributes: x=QOS:..." under -vv). So a QoS is
  asked for twice: `#PBS -W x=QOS:<q>` for Torque, and `#SBATCH --qos=<q>`, a
  comment to Torque, which sbatch honours.
- `-o`/`-e`: overridden by the wrapper (`<script>.o<id>`): job.sh redirects its
  own output into the job directory.
- A refusal is printed on stdout, wrapped in the wrapper's own text, exit 1.
- qsub prints the bare Slurm id ("31"), for an array too.
- Elements run with SLURM_ARRAY_TASK_ID and SLURM_JOB_ID, no PBS_* variables.
  `qstat -f 31` shows one record: the pending elements, and once all started, the
  last one to start; the others run under plain ids of their own ("32", "33")
  with nothing linking them to the array, and `qstat -t` is refused ("Unknown
  option: t"). So each element records its id in `started.<index>` and the
  final-state read asks qstat about those ids (a real Torque's `123[4].server`
  ids are asked about the same way).
- `qstat` says `C` for every end, with no exit_status, a walltime kill included:
  job.sh traps the scheduler's SIGTERM and leaves `terminated`, which makes such
  a job TIMEOUT (a real Torque's exit_status -11 and PBS Pro's -29 say it
  themselves, see `adapters.pbs.adapter.parse.PBS_EXIT_STATUSES`).
- `qdel` asks Slurm to kill the job (the whole array for an array's id); running
  elements still get SIGTERM first (job.sh leaves `terminated` and exit 143), and
  the `cancelled` marker our qdel leaves makes them CANCELLED, not TIMEOUT.
PBS Pro: `-J X-Y[:Z][%N]` (one range of at least two indices; the `%N` limit is
OpenPBS 20 / PBS Pro 2020 syntax), `-W depend=`, no QoS (refused, naming `qos`),
`qstat -t` for array elements.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from adapters.base import ArrayElement, CenterLoad, JobRequest, NativeStatus
from adapters.batch.adapter import JobDirAdapter, ping_failed
from adapters.batch.jobdir import (
    STARTED,
    JobDir,
    SpecRefused,
    cancelled_marker_command,
    directive,
    quote,
    render_body,
    reserved_directive,
)
from adapters.batch.markers import SEPARATOR, JobMarkers, as_element
from adapters.batch.rejections import (
    PBS_REJECTIONS,
    field_over_limits,
    job_partition,
    names_no_limit,
    refused_field,
    scheduler_message,
)
from adapters.errors import AdapterError, CenterUnavailable, CommandFailed, SubmitRejected
from adapters.pbs.load import build_load_command, parse_load
from adapters.pbs.parse import (
    DIALECTS,
    match_ids,
    parse_pbspro_json,
    parse_pbspro_qstat,
    parse_torque_qstat,
    short_id,
)
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

#: qsub options an extra directive may not set: arrays and dependencies have fields
#: of their own, and job.sh needs bash.
RESERVED_QSUB = ("-t", "-J", "-W depend", "-S")
#: Torque's conditions on an array job (`123[]`) are spelled apart.
TORQUE_ARRAY_CONDITIONS = {
    "afterok": "afterokarray",
    "afternotok": "afternotokarray",
    "afterany": "afteranyarray",
    "after": "afterstartarray",
}


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


def torque_array(spec: str | None) -> str | None:
    """Torque's `-t`: ranges and lists with an optional "%N" limit, but no steps:
    a stepped range becomes the list of its indices."""
    if spec is None:
        return None
    body, percent, limit = spec.partition("%")
    parts = []
    for part in body.split(","):
        bounds, _, step = part.partition(":")
        first, _, last = bounds.partition("-")
        if step and int(step) > 1:
            parts += [str(i) for i in range(int(first), int(last or first) + 1, int(step))]
        else:
            parts.append(bounds)
    return ",".join(parts) + (f"%{limit}" if percent else "")


def pbspro_array(spec: str | None) -> str | None:
    """PBS Pro's `-J X-Y[:Z][%N]`: one range of at least two indices, nothing else."""
    if spec is None:
        return None
    body = spec.partition("%")[0]
    bounds = body.partition(":")[0]
    first, dash, last = bounds.partition("-")
    if "," in body or not dash or int(last) <= int(first):
        raise SpecRefused(
            "array",
            f"PBS Pro takes one range of at least two indices (start-end[:step][%N]), not {spec!r}",
        )
    return spec


def _dependencies(job: JobRequest, dialect: str) -> str | None:
    by_condition: dict[str, list[str]] = {}
    for condition, parent in job.dependencies:
        if dialect == "torque" and "[]" in parent:
            condition = TORQUE_ARRAY_CONDITIONS[condition]
        by_condition.setdefault(condition, []).append(parent)
    return ",".join(":".join((c, *ids)) for c, ids in by_condition.items()) or None


#: (directive, resource name or "", how to render the value); None skips the line.
_Render = Callable[[JobRequest, str | None], "str | None"]
PBS_DIRECTIVES: dict[str, tuple[tuple[str, str, _Render], ...]] = {
    "torque": (
        ("#PBS -N", "", lambda j, q: _safe_name(j.name)),
        ("#PBS -l", "nodes", lambda j, q: _torque_nodes(j)),
        ("#PBS -l", "walltime", lambda j, q: _walltime(j)),
        ("#PBS -l", "mem", lambda j, q: _torque_mem(j)),
        ("#PBS -q", "", lambda j, q: q),
        ("#PBS -A", "", lambda j, q: j.account),
        ("#PBS -W", "x", lambda j, q: f"QOS:{j.qos}" if j.qos else None),  # Moab's extension
        ("#SBATCH --qos", "", lambda j, q: j.qos),  # Slurm's qsub drops the line above
        ("#PBS -t", "", lambda j, q: torque_array(j.array)),
        ("#PBS -W", "depend", lambda j, q: _dependencies(j, "torque")),
    ),
    "pbspro": (
        ("#PBS -N", "", lambda j, q: _safe_name(j.name)),
        ("#PBS -l", "select", lambda j, q: _pbspro_select(j)),
        ("#PBS -l", "walltime", lambda j, q: _walltime(j)),
        ("#PBS -q", "", lambda j, q: q),
        ("#PBS -A", "", lambda j, q: j.account),
        ("#PBS -J", "", lambda j, q: pbspro_array(j.array)),
        ("#PBS -W", "depend", lambda j, q: _dependencies(j, "pbspro")),
    ),
}


def check_qsub_job(job: JobRequest, dialect: str) -> None:
    """What this dialect cannot be asked for as given (beyond what every scheduler refuses)."""
    if dialect == "pbspro":
        if job.qos is not None:
            raise SpecRefused("qos", "PBS Pro has no QoS: the pbspro dialect cannot express 'qos'")
        pbspro_array(job.array)
    for i, arg in enumerate(job.extra_directives):
        if reserved_directive(arg, RESERVED_QSUB):
            raise SpecRefused(
                f"extra_directives.pbs[{i}]",
                f"extra directive {arg!r} is not allowed: arrays and dependencies have "
                "fields of their own, and the job script needs bash",
            )


def build_pbs_script(
    job: JobRequest, jobdir: JobDir, home: str, dialect: str, default_queue: str | None = None
) -> str:
    check_qsub_job(job, dialect)
    queue = job.queue or default_queue
    lines = ["#!/bin/bash"]
    for head, resource, render in PBS_DIRECTIVES[dialect]:
        value = render(job, queue)
        if value is None:
            continue
        if head.startswith("#SBATCH"):
            lines.append(directive(f"{head}=", value))
        else:
            lines.append(directive(f"{head} {resource}=" if resource else f"{head} ", value))
    # Verbatim: validated to hold nothing a directive parser would unquote.
    lines += [f"#PBS {arg}" for arg in job.extra_directives]
    # Some PBS front ends ignore -o/-e (Slurm's qsub writes <script>.o<id> beside the
    # script), so the job sends its own output into the job directory.
    return "\n".join(lines) + "\n\n" + render_body(job, jobdir, home, redirect_output=True)


# ------------------------------------------------------------ commands


#: qstat prints times in its local time, the center's zone, unknown here: ask for UTC,
#: which `adapters.pbs.adapter.parse.pbs_epoch` reads.
_QSTAT = "TZ=UTC0 qstat"


#: PBS Pro keeps finished jobs for `qstat -x` only with job history on, and with it off
#: (the default after install) `-x` makes qstat answer no job at all, live ones included
#: ("PBS is not configured to maintain job history", exit 0): ask for `-x` only where
#: the server keeps history. Without it a finished job is gone from every answer and
#: its job directory tells how it ended.
_PBSPRO_HISTORY = "h=; qstat -Bf 2>/dev/null | grep -q 'job_history_enable = True' && h=-x"


def build_qstat_command(native_ids: Sequence[str], dialect: str) -> str:
    ids = " ".join(quote(i) for i in native_ids)
    if dialect == "pbspro":
        # Text, not `-F json`: OpenPBS's JSON answer to several ids lists only the first.
        # -w: one attribute a line; -t: array elements; $h: finished jobs, where kept.
        return f"{_PBSPRO_HISTORY}; {_QSTAT} -f -w $h -t {ids}"
    return f"{_QSTAT} -f {ids}"


def build_requery_command(native_ids: Sequence[str]) -> str:
    """PBS Pro: the jobs a status answer left out, asked about one id at a time (in
    JSON, which serves one id right), from its history where the server keeps one."""
    ids = " ".join(quote(i) for i in native_ids)
    return f'{_PBSPRO_HISTORY}; for id in {ids}; do {_QSTAT} -f -F json $h -t "$id"; done'


def build_element_query() -> str:
    """A filter over marker lines: `qstat -f` of the ids array elements recorded in their
    `started.<index>` files, then its exit status. Torque's qstat lists an element
    only when asked about it by id, and Slurm's cannot tell an element from any other
    job. The ids pass sed's filter (no shell metacharacters) and are not globbed."""
    pattern = rf"s/^[0-9a-f-]*\/{STARTED}\.[0-9]*:\([][0-9A-Za-z._-]\{{1,128\}}\)$/\1/p"
    return (
        f'sed -n {quote(pattern)} | {{ set -f; ids=$(cat); if [ -n "$ids" ]; then '
        f'{_QSTAT} -f $ids 2>/dev/null; echo "{SEPARATOR} $?"; else echo "{SEPARATOR} 0"; fi; }}'
    )


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


def ping_command(dialect: str) -> str:
    """The health probe, exit 0 when the server answers. Slurm's Torque wrapper has no
    `qstat -B` without an argument; its `qstat -Q` exits 8 ("Problem loading jobs.")
    when slurmctld does not answer."""
    return "qstat -B" if dialect == "pbspro" else "qstat -Q"


def qsub_rejection(result: CommandResult, job: JobRequest) -> tuple[str, str | None]:
    said = scheduler_message(result.stdout, result.stderr)
    return said, refused_field(said, PBS_REJECTIONS, job, "pbs")


class PbsAdapter(JobDirAdapter):
    """A PBS center (Torque or PBS Pro dialect) reached over SSH."""

    scheduler = "qsub"
    submit_tool = "qsub"
    family = "pbs"

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
        # PBS Pro's `qstat -t` lists every subjob; Torque's qstat (and Slurm's) only
        # what it is asked about by id, and Slurm's prints an array's id like any job's.
        self.lists_pending_elements = dialect == "pbspro"
        self.reads_array_markers = dialect == "torque"

    def check_job(self, job: JobRequest) -> None:
        super().check_job(job)
        check_qsub_job(job, self.dialect)

    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str:
        return build_pbs_script(job, jobdir, home, self.dialect, self.default_queue)

    def rejection(self, result: CommandResult, job: JobRequest) -> tuple[str, str | None]:
        return qsub_rejection(result, job)

    async def submit_many(self, jobs: Sequence[JobRequest]) -> list[str | Exception]:
        outcomes = await super().submit_many(jobs)
        vague = [
            i
            for i, o in enumerate(outcomes)
            if isinstance(o, SubmitRejected) and o.field is None and names_no_limit(o.stderr)
        ]
        if vague:
            await self._name_limit_fields([jobs[i] for i in vague], [outcomes[i] for i in vague])
        return outcomes

    async def _name_limit_fields(
        self, jobs: Sequence[JobRequest], refusals: Sequence[object]
    ) -> None:
        """PBS Pro's "Job violates queue and/or server resource limits" names no field:
        the queue's limits, asked once, tell which value of the job is over them."""
        try:
            load = await self.load()
        except AdapterError:  # the refusal stands as it is, without a field
            return
        for job, refusal in zip(jobs, refusals, strict=True):
            partition = job_partition(load.partitions, job.queue or self.default_queue)
            if isinstance(refusal, SubmitRejected) and partition is not None:
                refusal.field = field_over_limits(job, partition)

    def status_command(self, native_ids: Sequence[str]) -> str:
        return build_qstat_command(native_ids, self.dialect)

    def _parse(self, text: str) -> dict[str, NativeStatus]:
        return parse_pbspro_qstat(text) if self.dialect == "pbspro" else parse_torque_qstat(text)

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        return build_requery_command(native_ids) if self.dialect == "pbspro" else None

    def parse_accounting(
        self, text: str, stderr: str, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        try:
            return match_ids(native_ids, parse_pbspro_json(text))
        except ValueError:  # a document cut short: no evidence either way
            return {}

    def _check_qstat(self, exit_status: int, stderr: str) -> None:
        # 153 is PBS's "unknown job id": some asked-about jobs are gone, the rest are listed.
        if exit_status not in (0, 153):
            raise CenterUnavailable(
                f"center {self.center_id}: qstat failed (exit {exit_status}): "
                f"{stderr.strip()[:300]}",
                center=self.center_id,
            )

    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        self._check_qstat(result.exit_status, result.stderr.decode(errors="replace"))
        return match_ids(native_ids, self._parse(result.stdout.decode(errors="replace")))

    def is_array_id(self, native_id: str) -> bool:
        return "[]" in native_id

    def element_native_id(self, array_id: str, index: int, started: str | None) -> str:
        if "[]" in array_id:
            return array_id.replace("[]", f"[{index}]", 1)
        # Slurm's qsub: an element's own id once it started, else the array's (which
        # the pending elements share).
        return started or array_id

    def element_query_command(self) -> str | None:
        return build_element_query() if self.dialect == "torque" else None

    def parse_element_query(self, text: str, exit_status: int) -> dict[str, NativeStatus]:
        # Never read a failing qstat as "the elements are gone".
        self._check_qstat(exit_status, "")
        return self._parse(text)

    def queried_elements(
        self, markers: JobMarkers, queried: Mapping[str, NativeStatus]
    ) -> list[ArrayElement]:
        by_short = {short_id(k): s for k, s in queried.items()}
        found = []
        for index, own in markers.elements.items():
            s = queried.get(own.started or "") or by_short.get(short_id(own.started or ""))
            if own.started and s is not None:
                found.append(replace(as_element(index, s), native_id=own.started))
        return found

    def cancel_command(self, native_id: str, jobdir: JobDir) -> str:
        return build_qdel_command(native_id, jobdir)

    def already_gone(self, result: CommandResult) -> bool:
        return qdel_refused_because_finished(result)

    async def ping(self) -> None:
        command = ping_command(self.dialect)
        # Not counted in remote_commands: that counts the job and status traffic.
        result = await self.connection.run(command)
        if result.exit_status != 0:
            raise ping_failed(self.center_id, command, result)

    def load_command(self) -> str | None:
        return build_load_command(self.dialect)

    def parse_load(self, result: CommandResult, queried_at: float) -> CenterLoad:
        try:
            return parse_load(
                result.stdout.decode(errors="replace"), queried_at, self.dialect, self.default_queue
            )
        except ValueError as exc:  # PBS Pro's JSON, broken
            raise CommandFailed(
                f"center {self.center_id}: unreadable {self.dialect} load output: {exc}",
                command=build_load_command(self.dialect),
                exit_status=result.exit_status,
                stderr=result.stderr.decode(errors="replace"),
                center=self.center_id,
            ) from None
