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

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from adapters.base import ArrayElement, CenterLoad, JobRequest, NativeStatus
from adapters.batch.adapter import JobDirAdapter, ping_failed
from adapters.batch.jobdir import JobDir
from adapters.batch.markers import JobMarkers
from adapters.batch.rejections import field_over_limits, job_partition, names_no_limit
from adapters.batch.settle import as_element
from adapters.batch.truth import TruthQueries
from adapters.errors import AdapterError, CenterUnavailable, CommandFailed, SubmitRejected
from adapters.pbs.commands import (
    build_element_query,
    build_qdel_command,
    build_qstat_command,
    build_requery_command,
    ping_command,
    qdel_refused_because_finished,
    qsub_rejection,
)
from adapters.pbs.load import build_load_command, parse_load
from adapters.pbs.parse import (
    DIALECTS,
    match_ids,
    parse_pbspro_json,
    parse_pbspro_qstat,
    parse_torque_qstat,
    short_id,
)
from adapters.pbs.script import build_pbs_script, check_qsub_job
from adapters.pbs.truth import pbs_truth
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget


class PbsAdapter(JobDirAdapter):
    """A PBS center (Torque or PBS Pro dialect) reached over SSH."""

    scheduler = "qsub"
    submit_tool = "qsub"
    family = "pbs"

    def __init__(
        self, target: SSHTarget, pool: SSHPool, *, dialect: str = "torque", **options: Any
    ) -> None:
        """`options`: those of `JobDirAdapter` (work_root, default_queue)."""
        if dialect not in DIALECTS:
            raise ValueError(f"PBS dialect must be one of {DIALECTS}, got {dialect!r}")
        super().__init__(target, pool, **options)
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

    def truth_queries(self) -> TruthQueries:
        return pbs_truth(self.dialect)

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
