"""A Slurm center's partitions and live load from one remote command: pure builder and
parser (`SlurmAdapter.load` runs them).

The command prints three parts, separated by `SEPARATOR` lines:
- `date +%s`: the center's clock, so waits are counted on the clock the scheduler's
  own times use;
- `sinfo -N`: one line per (node, partition) with the node's state, CPUs
  ("A/I/O/T"), memory, configured GRES and GRES in use, and the partition's limits;
- `squeue`: every user's pending and running jobs with partition, reason and the
  scheduler's expected start (pending) or end (running), in epoch seconds
  (`SLURM_TIME_FORMAT=%s`).
The parts are joined with `&&`: if a part fails (slurmctld down), the whole command
exits non-zero with that part's message on stderr and nothing is read from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from adapters.base import CenterLoad, PartitionLoad
from adapters.batch.jobdir import array_indices
from adapters.batch.load import gpus_by_model, sum_nodes
from adapters.batch.markers import SEPARATOR
from adapters.transport.framing import quote

#: `sinfo -O` fields; ":|" is "no width, then a '|'": nothing is padded or cut.
SINFO_FIELDS = (
    "NodeList",  # with -N: exactly one node
    "Partition",  # the name, with "*" after the default partition's
    "Available",  # the partition's state: up, down, drain, inact
    "StateComplete",  # the node's base state and every flag: "mixed+drain"
    "CPUs",
    "CPUsState",  # allocated/idle/other/total
    "Memory",  # RealMemory, MiB
    "Time",  # the partition's MaxTime
    "Size",  # the partition's job size in nodes: "1-infinite", "2-16"
    "Gres",  # configured: "gpu:a100:4(S:0-1)", "gpu:4", "(null)"
    "GresUsed",  # in use: "gpu:a100:2(IDX:0-1)"
)
SINFO_FORMAT = ",".join(f"{name}:|" for name in SINFO_FIELDS)
#: partition (a pending job may name several, "a,b"), job id ("12", "12_3", pending
#: elements "12_[4-9%2]"), state, reason, expected start, expected end.
SQUEUE_FORMAT = "%P|%i|%T|%r|%S|%e"

#: Node base states (StateComplete's first word) -> how a node in it counts.
NODE_BASE_STATES: dict[str, str] = {
    "idle": "idle",
    "allocated": "allocated",
    "mixed": "allocated",  # partly allocated
    "down": "down",
    "error": "down",  # some of its CPUs failed
    "future": "down",  # declared, not yet in service
    "unknown": "down",  # slurmctld has not heard from it since it started
}
#: Flags that make a node unusable for a job queued now, whatever its base state.
#: A draining node ("mixed+drain") still runs its jobs but takes no new one: it
#: counts as down here, while its allocated CPUs stay allocated.
NODE_DOWN_FLAGS = frozenset(
    {
        "drain",
        "fail",  # failing: drained on a hardware error
        "not_responding",  # the "*" suffix of sinfo's short states
        "invalid_reg",  # registered with a configuration that does not match
        "maintenance",  # in a maintenance reservation
        "reboot_issued",  # rebooting now
        "power_down",  # to be powered down once idle
        "powering_down",
    }
)
#: Flags that make an idle node taken, though no job runs on it yet.
NODE_TAKEN_FLAGS = frozenset(
    {
        "completing",  # a job's epilog still runs there
        "reserved",  # in an advance reservation: not free for everyone's jobs
    }
)
#: Pending reasons of a job that waits its turn for resources, and so stands ahead
#: of a job queued now. Jobs held, waiting for a dependency, a begin time, a
#: reservation or their own account's limits do not.
QUEUE_AHEAD_REASONS = frozenset({"Resources", "Priority", "None", ""})
_CPUS_STATE_RE = re.compile(r"^(\d+)/(\d+)/(\d+)/(\d+)$")
_ARRAY_PENDING_RE = re.compile(r"^\d+_\[([0-9,:%-]+)\]$")


def build_load_command() -> str:
    """The one command; nothing of it comes from a user."""
    sinfo = f"sinfo -h -N --noconvert -O {quote(SINFO_FORMAT)}"
    squeue = f"SLURM_TIME_FORMAT=%s squeue -h -t PENDING,RUNNING -o {quote(SQUEUE_FORMAT)}"
    return f"date +%s && echo {SEPARATOR} && {sinfo} && echo {SEPARATOR} && {squeue}"


# ------------------------------------------------------------ small parsers


def slurm_duration(text: str) -> int | None:
    """A Slurm time limit -> seconds; None for no limit.

    Slurm prints "infinite" / "UNLIMITED", "D-HH:MM:SS", "D-HH:MM", "D-HH", "HH:MM:SS",
    "MM:SS" and bare minutes ("30")."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "", "n/a", "none"):
        return None
    days, dash, rest = text.rpartition("-")
    if dash and not days.isdigit():
        raise ValueError(f"not a Slurm time: {text!r}")
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or len(parts) > 3:
        raise ValueError(f"not a Slurm time: {text!r}")
    numbers = [int(p) for p in parts]
    if dash:  # D-HH[:MM[:SS]]
        numbers += [0] * (3 - len(numbers))
        hours, minutes, seconds = numbers
    elif len(numbers) == 3:
        hours, minutes, seconds = numbers
    elif len(numbers) == 2:
        hours, (minutes, seconds) = 0, numbers
    else:
        hours, minutes, seconds = 0, numbers[0], 0
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


def node_condition(state: str) -> str:
    """A StateComplete value ("mixed+drain", "idle+not_responding") -> "idle",
    "allocated" or "down"."""
    base, *flags = state.strip().lower().split("+")
    if NODE_DOWN_FLAGS.intersection(flags):
        return "down"
    condition = NODE_BASE_STATES.get(base.rstrip("*~#%!$@^-"), "down")  # unknown: unusable
    if condition == "idle" and NODE_TAKEN_FLAGS.intersection(flags):
        return "allocated"
    return condition


def _max_nodes(size: str) -> int | None:
    """sinfo's job size "1-infinite" / "2-16" / "4" -> the most nodes a job may ask."""
    most = size.strip().rpartition("-")[2]
    return int(most) if most.isdigit() else None


def _int(text: str) -> int:
    digits = text.strip().rstrip("+")
    return int(digits) if digits.isdigit() else 0


def _epoch(text: str) -> float | None:
    text = text.strip()
    return float(text) if text.isdigit() and int(text) > 0 else None


# ------------------------------------------------------------ the parser


@dataclass
class _Node:
    name: str
    condition: str
    cpus: int
    memory_mib: int
    cores: tuple[int, int, int, int]  # sinfo's A/I/O/T: allocated, idle, other, total
    gpus: dict[str, int]
    gpus_used: dict[str, int]


@dataclass
class _Partition:
    name: str
    default: bool
    available: bool
    max_walltime: int | None
    max_nodes: int | None
    nodes: list[_Node] = field(default_factory=list)
    queued: int = 0
    running: int = 0
    starts: list[float] = field(default_factory=list)  # expected starts of jobs ahead
    ahead: int = 0  # pending jobs that wait their turn for resources
    ends: list[float] = field(default_factory=list)  # expected ends of running jobs


def _parse_node_line(line: str) -> tuple[_Node, str, str, str, str] | None:
    fields = line.split("|")
    if len(fields) < len(SINFO_FIELDS):
        return None
    node, partition, avail, state, cpus, cores, memory, limit, size, gres, used = (
        f.strip() for f in fields[: len(SINFO_FIELDS)]
    )
    match = _CPUS_STATE_RE.match(cores)
    if not node or not partition or match is None:
        return None
    a, i, o, t = (int(n) for n in match.groups())
    condition = node_condition(state)
    if condition == "down":  # sinfo counts idle CPUs of a node failing or not responding
        i, o = 0, i + o  # as idle: none of them is free for a job
    parsed = _Node(
        node,
        condition,
        _int(cpus),
        _int(memory),
        (a, i, o, t),
        gpus_by_model(gres),
        gpus_by_model(used),
    )
    return parsed, partition, avail, limit, size


def _count_jobs(lines: Iterable[str], partitions: dict[str, _Partition]) -> tuple[int, int]:
    """Queued and running jobs per partition (an array's pending elements one each);
    the center's totals count a job pending in several partitions once."""
    queued = running = 0
    for line in lines:
        fields = line.split("|")
        if len(fields) < 6:
            continue
        names, job_id, state, reason, start, end = (f.strip() for f in fields[:6])
        pending = _ARRAY_PENDING_RE.match(job_id)
        try:
            jobs = len(array_indices(pending.group(1))) if pending else 1
        except ValueError:
            jobs = 1
        if state == "PENDING":
            queued += jobs
        elif state == "RUNNING":
            running += jobs
        else:
            continue
        for name in names.split(","):
            part = partitions.get(name)
            if part is None:
                continue  # a partition sinfo does not show (hidden, or without nodes)
            if state == "RUNNING":
                part.running += jobs
                if (at := _epoch(end)) is not None:
                    part.ends.append(at)
                continue
            part.queued += jobs
            if reason in QUEUE_AHEAD_REASONS:
                part.ahead += jobs
                if (at := _epoch(start)) is not None:
                    part.starts.append(at)
    return queued, running


def _estimated_wait(part: _Partition, cores_idle: int, clock: float) -> float | None:
    """The scheduler's own figures for when a job queued now would start: the latest
    expected start of the jobs waiting ahead of it; with none ahead, at once if a core
    is idle, else when the first running job is expected to end. None where the
    scheduler has not estimated it (yet: backfill estimates each cycle)."""
    if not part.available:
        return None
    if part.ahead:
        return max(max(part.starts) - clock, 0.0) if part.starts else None
    if cores_idle > 0:
        return 0.0
    return max(min(part.ends) - clock, 0.0) if part.ends else None


def parse_load(stdout: str, now: float) -> CenterLoad:
    """The command's output -> the center's load; `now` is when it was asked (epoch s)."""
    clock_text, _, rest = stdout.partition(SEPARATOR + "\n")
    sinfo_text, _, squeue_text = rest.partition(SEPARATOR + "\n")
    clock = _epoch(clock_text) or now
    partitions: dict[str, _Partition] = {}
    nodes: dict[str, _Node] = {}
    for line in sinfo_text.splitlines():
        parsed = _parse_node_line(line)
        if parsed is None:
            continue
        node, listed, avail, limit, size = parsed
        name = listed.rstrip("*")
        part = partitions.get(name)
        if part is None:
            try:
                max_walltime = slurm_duration(limit)
            except ValueError:
                max_walltime = None
            part = partitions[name] = _Partition(
                name, listed.endswith("*"), avail.lower() == "up", max_walltime, _max_nodes(size)
            )
        part.nodes.append(node)
        nodes[node.name] = node
    queued, running = _count_jobs(squeue_text.splitlines(), partitions)
    loads = []
    for part in partitions.values():
        sums = sum_nodes(part.nodes)
        loads.append(
            PartitionLoad.of(
                sums,
                name=part.name,
                default=part.default,
                available=part.available,
                cores_per_node=max(n.cpus for n in part.nodes),
                memory_per_node_mib=max(n.memory_mib for n in part.nodes),
                max_walltime_seconds=part.max_walltime,
                max_nodes_per_job=part.max_nodes,
                jobs_queued=part.queued,
                jobs_running=part.running,
                estimated_wait_seconds=_estimated_wait(part, sums.cores_idle, clock),
            )
        )
    totals = sum_nodes(list(nodes.values()))  # each node once, whatever its partitions
    return CenterLoad(tuple(loads), now, queued, running, totals)
