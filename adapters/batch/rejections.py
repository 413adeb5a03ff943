"""A refused submission: what the scheduler said, and which spec field it points at.

The tables map the schedulers' own wording to spec fields. Slurm's were recorded
from the testbed (tests/fixtures/slurm/sbatch_rejected.json, the accounting refusals on
its center with slurmdbd and enforced associations); Slurm's
Torque-compatible qsub passes sbatch's messages through
(tests/fixtures/pbs/torque_slurm_qsub_rejected.json); Torque's and PBS Pro's are
written after their documented messages (tests/fixtures/pbs/pbs_qsub_rejected.json).
"""

from __future__ import annotations

import re

from adapters.base import JobRequest, PartitionLoad

#: (message pattern, spec field) pairs, tried in order on a refused submission's
#: message (case-insensitive), so narrower patterns come first. A tuple of fields
#: means "whichever of these the job set" (the first if it set none or several);
#: None means "no one field".
Rejections = tuple[tuple[str, str | tuple[str, ...] | None], ...]

#: The cpu fields, for a refusal that says too many CPUs without saying how they were asked.
_CPUS = ("resources.cpus_per_task", "resources.tasks_per_node", "resources.nodes")

SLURM_REJECTIONS: Rejections = (
    # "Job violates accounting/QOS policy" comes after a line naming the limit: its
    # reason code, (Assoc|QOS)(Grp|Max|Min)<what>[Per<scope>]Limit, e.g.
    # QOSMaxWallDurationPerJobLimit, AssocMaxCpuPerJobLimit, AssocMaxSubmitJobLimit.
    (r"\b(Assoc|QOS)\w*Wall\w*Limit\b", "resources.walltime"),
    (r"\b(Assoc|QOS)\w*Cpu\w*Limit\b", _CPUS),
    (r"\b(Assoc|QOS)\w*Node\w*Limit\b", "resources.nodes"),
    (r"\b(Assoc|QOS)\w*Mem\w*Limit\b", "resources.memory_per_node"),
    (r"\b(Assoc|QOS)\w*Gres\w*Limit\b", "resources.gpus_per_node"),
    # Too many jobs: the association's (the account it charges) or the QoS's limit.
    (r"\bAssoc\w*(Submit|Jobs?)\w*Limit\b", "account"),
    (r"\bQOS\w*(Submit|Jobs?)\w*Limit\b", "qos"),
    (r"violates accounting/QOS policy", None),  # a limit of no one field
    (r"invalid account|account.*(not permitted|invalid)", "account"),
    (r"invalid qos|\bqos\b", "qos"),
    (r"partition", "queue"),
    (r"time limit|--time", "resources.walltime"),
    (r"memory|--mem\b", "resources.memory_per_node"),
    (r"\bgres\b|generic resource|\bgpus?\b", "resources.gpus_per_node"),
    # Said of too much memory or too many GPUs alike (both recorded).
    (
        r"requested node configuration is not available",
        ("resources.memory_per_node", "resources.gpus_per_node", "resources.nodes"),
    ),
    (r"node count|--nodes", "resources.nodes"),
    # Said of too many CPUs per task, tasks per node, or (through qsub) nodes.
    (r"processors|\bcpus?\b|\btasks?\b", _CPUS),
    (r"dependency", "dependencies"),
    (r"array", "array"),
)

#: Slurm's first (the testbed's qsub is Slurm's), then Torque's "qsub: submit error
#: (<error> MSG=<detail>)" and PBS Pro's "qsub: <error>" wording.
PBS_REJECTIONS: Rejections = (
    *SLURM_REJECTIONS,
    (r"unknown queue|queue .*not found", "queue"),
    (r"walltime", "resources.walltime"),
    (r"\bp?v?mem\b", "resources.memory_per_node"),
    (r"\bnodes\b|nodect|\bselect\b", "resources.nodes"),
    (r"ncpus|\bppn\b|mpiprocs", ("resources.cpus_per_task", "resources.tasks_per_node")),
    (r"depend|unknown job id", "dependencies"),
    (r"illegal -[Jt]\b", "array"),
    (r"account", "account"),
)

_DEFAULTS: dict[str, object] = {
    "resources.nodes": 1,
    "resources.tasks_per_node": 1,
    "resources.cpus_per_task": 1,
}


def _asked(job: JobRequest, field: str) -> bool:
    """Whether the job asked for something in `field` beyond the defaults."""
    value = {
        "queue": job.queue,
        "account": job.account,
        "qos": job.qos,
        "array": job.array,
        "dependencies": job.dependencies,
        "resources.nodes": job.nodes,
        "resources.tasks_per_node": job.tasks_per_node,
        "resources.cpus_per_task": job.cpus_per_task,
        "resources.gpus_per_node": job.gpus_per_node,
        "resources.memory_per_node": job.memory_per_node_mib,
        "resources.walltime": job.walltime_seconds,
    }.get(field)
    return bool(value) and value != _DEFAULTS.get(field)


def rejected_field(message: str, table: Rejections, job: JobRequest) -> str | None:
    """The spec field a scheduler's refusal points at, from the first pattern that matches."""
    for pattern, field in table:
        if re.search(pattern, message, re.IGNORECASE):
            if isinstance(field, tuple):
                asked = [f for f in field if _asked(job, f)]
                return asked[0] if len(asked) == 1 else field[0]
            return field
    return None


def _option(directive: str) -> str:
    """A directive's option: `--time` of `--time=1:00` or `--time 1:00`, `-x` of `-x n1`."""
    return re.split(r"[= ]", directive, maxsplit=1)[0]


def refused_field(message: str, table: Rejections, job: JobRequest, family: str) -> str | None:
    """The spec field a refusal points at, extra directives included: a directive whose
    option the message names (`Invalid --time specification`, `unrecognized option
    '--bogus'`) is that field, `extra_directives.<family>[i]`; a refusal that names
    no field of the table, from a job with extra directives, points at them (the one
    directive, or the list when there are several), since everything else in the
    spec the gateway checked itself."""
    for i, directive in enumerate(job.extra_directives):
        option = re.escape(_option(directive))
        if re.search(rf"(?<![\w-]){option}(?![\w-])", message):
            return f"extra_directives.{family}[{i}]"
    field = rejected_field(message, table, job)
    if field is None and job.extra_directives:
        many = len(job.extra_directives) > 1
        return f"extra_directives.{family}" + ("" if many else "[0]")
    return field


_INVALID_ACCOUNT_RE = re.compile(r"invalid account", re.IGNORECASE)


def no_association(message: str, job: JobRequest, login: str, center: str | None) -> str | None:
    """The refusal's message when it means the login has no association at the center:
    with enforced associations, sbatch answers a job that names no account (so is
    charged to the login's default account) with "Invalid account ..." only when the
    login has no default account there, i.e. no association. None otherwise (a job
    naming an account is refused for that account)."""
    if job.account is not None or not _INVALID_ACCOUNT_RE.search(message):
        return None
    where = f" at {center}" if center else ""
    return (
        f"login {login} has no association{where}: no account to charge the job to "
        f"(the center's administrators add one with sacctmgr); the scheduler said: {message}"
    )


#: Slurm's Torque-compatible qsub prints sbatch's refusal on stdout, inside its own text.
_WRAPPED_RE = re.compile(r"and the output was:\n'(.*)'\s*\Z", re.DOTALL)


def scheduler_message(stdout: bytes, stderr: bytes) -> str:
    """What the scheduler said when it refused a job: stderr and stdout, trimmed (the
    message inside the Torque wrapper's own text where it has one)."""
    out = stdout.decode(errors="replace").strip()
    if match := _WRAPPED_RE.search(out):
        out = match.group(1)
    text = stderr.decode(errors="replace") + "\n" + out
    return "\n".join(line.strip() for line in text.splitlines() if line.strip())


#: PBS Pro / OpenPBS refuse a job over a queue's or the server's `resources_max` with
#: one sentence that names no resource (seen on OpenPBS 23.06, ../shared/fixtures/openpbs).
PBS_OVER_LIMITS_RE = re.compile(r"violates queue and/or server resource limits", re.IGNORECASE)


def names_no_limit(message: str) -> bool:
    """Whether a refusal says the job is over some limit without saying which."""
    return PBS_OVER_LIMITS_RE.search(message) is not None


def field_over_limits(job: JobRequest, partition: PartitionLoad) -> str | None:
    """The spec field whose value is above what `partition` (the job's queue, as the
    scheduler reports it) allows; None when the job is within every limit it reports."""
    if (
        partition.max_walltime_seconds
        and (job.walltime_seconds or 0) > partition.max_walltime_seconds
    ):
        return "resources.walltime"
    most_nodes = min(partition.nodes_total, partition.max_nodes_per_job or partition.nodes_total)
    if most_nodes and job.nodes > most_nodes:
        return "resources.nodes"
    if (
        partition.cores_per_node
        and job.tasks_per_node * job.cpus_per_task > partition.cores_per_node
    ):
        asked = [
            f for f in ("resources.cpus_per_task", "resources.tasks_per_node") if _asked(job, f)
        ]
        return asked[0] if len(asked) == 1 else "resources.cpus_per_task"
    if job.memory_per_node_mib and partition.memory_per_node_mib:
        if job.memory_per_node_mib > partition.memory_per_node_mib:
            return "resources.memory_per_node"
    if job.gpus_per_node and job.gpus_per_node > max(
        (g.per_node for g in partition.gpus), default=0
    ):
        return "resources.gpus_per_node"
    return None


def job_partition(partitions: tuple[PartitionLoad, ...], queue: str | None) -> PartitionLoad | None:
    """The partition (queue) a job goes to: the one it names, else the default one."""
    if queue is not None:
        return next((p for p in partitions if p.name == queue), None)
    return next((p for p in partitions if p.default), None)
