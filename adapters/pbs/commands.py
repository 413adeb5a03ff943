"""The qstat, qdel and health commands of a PBS center, and what their answers mean;
pure builders (`PbsAdapter` runs them)."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.base import JobRequest
from adapters.batch.jobdir import STARTED, JobDir, cancelled_marker_command
from adapters.batch.markers import SEPARATOR
from adapters.batch.rejections import PBS_REJECTIONS, refused_field, scheduler_message
from adapters.transport.framing import quote
from adapters.transport.ssh import CommandResult

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
