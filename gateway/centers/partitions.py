"""Whether a center's partition can run a job, and when the job would start there."""

from __future__ import annotations

from adapters.base import CenterLoad, PartitionLoad
from gateway.jobs.models import JobSpec
from gateway.jobs.records import JobRecord

#: Without the scheduler's own estimate, each queued job ahead is taken to cost this.
SECONDS_PER_QUEUED_JOB = 300.0


def not_yet_seen(active: list[JobRecord], center_id: str, load: CenterLoad) -> int:
    """Cores of the gateway's jobs sent to the center after its load was queried (or
    on their way): the load does not count them yet, so placement does."""
    cores = 0
    for job in active:
        if job.center != center_id:
            continue
        sent = job.submitted_at.timestamp() if job.submitted_at else None
        if sent is None or sent > load.queried_at:
            res = job.spec.resources
            cores += res.nodes * res.tasks_per_node * res.cpus_per_task
    return cores


def requirement_failures(center_id: str, p: PartitionLoad, spec: JobSpec) -> list[str]:
    """What of the spec's resources partition `p` cannot give, each naming its field."""
    res = spec.resources
    where = f"{center_id} partition {p.name}"
    problems = []
    if not p.available:
        problems.append(f"queue: {where} is not accepting jobs")
    if res.nodes > p.nodes_total or (p.max_nodes_per_job and res.nodes > p.max_nodes_per_job):
        limit = min(p.nodes_total, p.max_nodes_per_job or p.nodes_total)
        problems.append(f"resources.nodes: {where} gives at most {limit}, asked {res.nodes}")
    per_node = res.tasks_per_node * res.cpus_per_task
    if per_node > p.cores_per_node:
        problems.append(
            f"resources.cpus_per_task: {where} has {p.cores_per_node} cores per node, asked "
            f"{per_node} ({res.tasks_per_node} tasks x {res.cpus_per_task} cpus)"
        )
    elif res.nodes <= p.nodes_total and res.nodes * per_node > p.cores_total:
        # Its nodes differ: the largest ones are fewer than the job's nodes.
        problems.append(
            f"resources.nodes: {where} has {p.cores_total} cores in all, asked "
            f"{res.nodes * per_node} ({res.nodes} nodes x {per_node} cores)"
        )
    if res.memory_per_node and res.memory_per_node > p.memory_per_node_mib:
        problems.append(
            f"resources.memory_per_node: {where} has {p.memory_per_node_mib} MiB per node, "
            f"asked {res.memory_per_node} MiB"
        )
    if res.walltime and p.max_walltime_seconds and res.walltime > p.max_walltime_seconds:
        problems.append(
            f"resources.walltime: {where} allows {p.max_walltime_seconds:g} s, "
            f"asked {res.walltime:g} s"
        )
    if res.gpus_per_node:
        models = [g for g in p.gpus if res.gpu_type in (None, g.model)]
        if not p.gpus:
            problems.append(f"resources.gpus_per_node: {where} has no GPUs")
        elif not models:
            have = ", ".join(sorted({g.model for g in p.gpus}))
            problems.append(f"resources.gpu_type: {where} has no {res.gpu_type} GPUs ({have})")
        elif max(g.per_node for g in models) < res.gpus_per_node:
            most = max(g.per_node for g in models)
            problems.append(
                f"resources.gpus_per_node: {where} has at most {most} per node, "
                f"asked {res.gpus_per_node}"
            )
        elif res.nodes * res.gpus_per_node > sum(g.total for g in models):
            total = sum(g.total for g in models)
            problems.append(
                f"resources.nodes: {where} has {total} such GPUs in all, asked "
                f"{res.nodes * res.gpus_per_node} ({res.nodes} nodes x {res.gpus_per_node})"
            )
    return problems


def estimated_wait(p: PartitionLoad, cores: int, unseen_cores: int) -> tuple[float, str]:
    """Seconds until a job of `cores` would start, and what the figure rests on."""
    idle = max(p.cores_idle - unseen_cores, 0)
    state = f"{p.jobs_queued} queued, {idle} of {p.cores_total} cores idle"
    if p.jobs_queued == 0 and idle >= cores:
        return 0.0, state
    if p.estimated_wait_seconds is not None:
        return float(p.estimated_wait_seconds), f"scheduler's estimate; {state}"
    guess = SECONDS_PER_QUEUED_JOB * (p.jobs_queued + 1)
    return guess, f"no scheduler estimate, {SECONDS_PER_QUEUED_JOB:g} s per job ahead; {state}"
