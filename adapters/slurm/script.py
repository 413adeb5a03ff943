"""Slurm batch scripts: a job's fields as `#SBATCH` lines, then the common body."""

from __future__ import annotations

import re
from collections.abc import Callable

from adapters.base import JobRequest
from adapters.batch.jobdir import (
    STDERR,
    STDOUT,
    JobDir,
    SpecRefused,
    directive,
    grouped_dependencies,
    render_body,
    reserved_directive,
)
from adapters.slurm.status import GATEWAY_COMMENT

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


def slurm_time(seconds: int) -> str:
    """Walltime seconds -> Slurm's D-HH:MM:SS."""
    days, rest = divmod(max(1, seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


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
