"""PBS batch scripts in both dialects: a job's fields as `#PBS` lines (see
`adapters.pbs.adapter` for what the Torque wrapper honours), then the common body."""

from __future__ import annotations

import re
from collections.abc import Callable

from adapters.base import JobRequest
from adapters.batch.jobdir import (
    JobDir,
    SpecRefused,
    directive,
    render_body,
    reserved_directive,
)

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
