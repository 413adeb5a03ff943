"""A PBS center's queues and live load from one remote command, in both dialects: pure
builder and parser (`PbsAdapter.load` runs them).

Torque (and Slurm's Torque-compatible commands, "the wrapper"): `pbsnodes -a` blocks,
`qstat -Q -f` queue blocks, the `qstat -q` limits table and the server's
`default_queue` from `qstat -B -f`. PBS Pro / OpenPBS: the JSON of `pbsnodes -a -F
json`, `qstat -Q -f -F json` and `qstat -B -f -F json`. Parts are separated by
`SEPARATOR` lines and joined with `&&`, so a failing part fails the whole command.

PBS queues do not own nodes the way Slurm partitions do: a Torque queue reports every
node of the server; a PBS Pro queue its associated vnodes (node attribute `queue`),
or, if it has none, every vnode associated with no queue.

What cannot be had, and what stands in for it:
- No PBS front end here gives an estimated start time with its queue listing (Torque
  has none; PBS Pro's `estimated.start_time` is per job): the wait is None, except
  on PBS Pro when nothing is queued and a core is free (0).
- The wrapper prints neither the jobs on a node nor GPUs in use. A node it calls
  "mixed" (or draining, failing, completing) gets its allocated CPUs from the
  running jobs' `exec_host` ("node/<cpus>" there) in `qstat -f`, which the command
  asks for only when such a node exists. GPUs of a node running jobs count as
  allocated, those of a free node as free: never a GPU promised that may be taken.
- A real Torque tells allocated slots by `jobs = 0-3/12.server,...` and GPUs in use
  by `gpu_status` (`gpu_state`); without them the same upper bound holds.
- Torque GPUs have no model name Slurm-style: "gpu", unless the wrapper's `status`
  carries the Slurm GRES ("gres=gpu:a100:4").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.base import CenterLoad, PartitionLoad
from adapters.batch.load import gpus_by_model, sum_nodes
from adapters.batch.markers import SEPARATOR
from adapters.pbs.parse import DIALECTS, parse_qstat_blocks
from adapters.pbs.values import (
    node_condition,
    node_states,
    pbs_duration,
    pbs_int,
    pbs_size_mib,
    state_counts,
    truthy,
)

#: States in which no CPU of the node is left for a job queued now, whatever its jobs hold.
_FULL_NODE_STATES = frozenset({"job-exclusive", "resv-exclusive", "busy", "allocated"})
#: Wrapper states whose allocated CPUs only the running jobs tell.
_PARTLY_ALLOCATED = ("mixed", "draining", "failing", "completing")
_SLOTS_RE = re.compile(r"(\d+)(?:-(\d+))?/")
_EXEC_HOST_RE = re.compile(r"^([^/+]+)/(\d+)$")


def build_load_command(dialect: str) -> str:
    """The one command of the dialect; nothing of it comes from a user."""
    if dialect not in DIALECTS:
        raise ValueError(f"PBS dialect must be one of {DIALECTS}, got {dialect!r}")
    sep = f" && echo {SEPARATOR} && "
    if dialect == "pbspro":
        return sep.join(("pbsnodes -a -F json", "qstat -Q -f -F json", "qstat -B -f -F json"))
    # The wrapper's qstat exits 153 after a listing of nothing (and `qstat -q` always);
    # its `qstat -B -f` lists jobs instead of the server, hence the grep.
    partly = "|".join(f"*slurmstate={state}*" for state in _PARTLY_ALLOCATED)
    return sep.join(
        (
            'hpcfed_n=$(pbsnodes -a) && printf "%s\\n" "$hpcfed_n"',
            "{ qstat -Q -f || [ $? -eq 153 ]; }",
            "{ qstat -q || [ $? -eq 153 ]; }",
            "{ qstat -B -f 2>/dev/null | grep -E '^[[:space:]]+default_queue = ' || true; }",
            f'case "$hpcfed_n" in {partly}) qstat -f || [ $? -eq 153 ];; esac',
        )
    )


# ------------------------------------------------------------ nodes and queues


@dataclass
class _Node:
    name: str
    condition: str
    cpus: int
    cpus_allocated: int
    memory_mib: int
    gpus: dict[str, int] = field(default_factory=dict)
    gpus_allocated: dict[str, int] = field(default_factory=dict)
    queue: str | None = None  # PBS Pro: the one queue whose jobs it runs

    @property
    def cores(self) -> tuple[int, int, int, int]:
        """Allocated, idle, down and total: a down node's free CPUs are down."""
        free = self.cpus - self.cpus_allocated
        down = self.condition == "down"
        return (self.cpus_allocated, 0 if down else free, free if down else 0, self.cpus)

    @property
    def gpus_used(self) -> dict[str, int]:
        return self.gpus_allocated


@dataclass
class _Queue:
    name: str
    available: bool
    max_walltime: int | None
    max_nodes: int | None
    queued: int
    running: int
    waiting_ahead: int | None  # jobs eligible and waiting for resources, if told


def _parse_pbsnodes_blocks(text: str) -> dict[str, dict[str, str]]:
    """Torque `pbsnodes -a`: a node name at the line's start, then `  name = value`."""
    nodes: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if not line.strip():
            current = None
        elif not line[0].isspace():
            current = nodes.setdefault(line.strip(), {})
        elif current is not None and " = " in line:
            key, _, value = line.strip().partition(" = ")
            current[key.strip()] = value.strip()
    return nodes


def _status_items(status: str) -> dict[str, str]:
    """Torque's `status = a=1,b=2,...`; a value holding commas (the wrapper's
    `gres=gpu:a100:2,gpu:v100:2`) keeps the pieces without "=" that follow it."""
    items: dict[str, str] = {}
    last = None
    for piece in status.split(","):
        key, eq, value = piece.partition("=")
        if eq and re.fullmatch(r"[\w.]+", key):
            last = key
            items[key] = value
        elif last is not None:
            items[last] += "," + piece
    return items


def _running_cpus_by_node(qstat_f: str) -> dict[str, int]:
    """The wrapper's `qstat -f`: CPUs its running jobs hold on each node (exec_host is
    "node/<cpus>[+node/<cpus>]" there)."""
    cpus: dict[str, int] = {}
    for attrs in parse_qstat_blocks(qstat_f).values():
        if attrs.get("job_state") != "R":
            continue
        for entry in attrs.get("exec_host", "").split("+"):
            match = _EXEC_HOST_RE.match(entry.strip())
            if match:
                cpus[match.group(1)] = cpus.get(match.group(1), 0) + int(match.group(2))
    return cpus


def _torque_gpus(attrs: Mapping[str, str], status: Mapping[str, str]) -> dict[str, int]:
    total = pbs_int(attrs.get("gpus", "0"))
    typed = gpus_by_model(status.get("gres", ""))
    if total and sum(typed.values()) == total:
        return typed
    return {"gpu": total} if total else {}


def _torque_nodes(text: str, running_cpus: Mapping[str, int]) -> list[_Node]:
    nodes = []
    for name, attrs in _parse_pbsnodes_blocks(text).items():
        status = _status_items(attrs.get("status", ""))
        states = node_states(attrs.get("state", ""))
        condition = node_condition(states)
        cpus = pbs_int(attrs.get("np", "")) or pbs_int(status.get("ncpus", ""))
        jobs = attrs.get("jobs", "").strip()
        if jobs:  # Torque: the slots its jobs hold, "0-3/12.server,4/13.server"
            held = sum(int(b or a) - int(a) + 1 for a, b in _SLOTS_RE.findall(jobs))
        elif _FULL_NODE_STATES.intersection(states):
            held = cpus
        elif "slurmstate" in status and set(states) & set(_PARTLY_ALLOCATED):
            held = running_cpus.get(name, cpus)  # without the listing: the upper bound
        else:
            held = running_cpus.get(name, 0)
        if condition == "idle" and held:
            condition = "allocated"  # "free" with jobs: Torque's partly used node
        gpus = _torque_gpus(attrs, status)
        gpu_states = re.findall(r"gpu_state=(\w+)", attrs.get("gpu_status", ""))
        if gpu_states and len(gpus) == 1:
            (model,) = gpus
            busy = {model: sum(1 for s in gpu_states if s.lower() != "unallocated")}
        else:
            busy = dict(gpus) if held or condition == "allocated" else {}
        memory = status.get("physmem") or status.get("availmem", "")
        nodes.append(
            _Node(name, condition, cpus, min(held, cpus), pbs_size_mib(memory), gpus, busy)
        )
    return nodes


def _queue_blocks(text: str) -> dict[str, dict[str, str]]:
    """Torque `qstat -Q -f`: `Queue: <name>` then `    name = value` lines."""
    queues: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        if match := re.match(r"^Queue:\s*(\S+)", line):
            current = queues.setdefault(match.group(1), {})
        elif current is not None and (match := re.match(r"^\s+([\w.]+) = (.*)$", line)):
            current[match.group(1)] = match.group(2).strip()
    return queues


def _limits_table(text: str) -> dict[str, list[str]]:
    """`qstat -q`: name, memory, cpu time, walltime, node, run, que, lm, state (E/D R/S)."""
    rows = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) == 10 and words[5].isdigit() and words[6].isdigit():
            rows[words[0]] = words
    return rows


def _torque_queues(blocks_text: str, limits_text: str) -> list[_Queue]:
    limits = _limits_table(limits_text)
    queues = []
    for name, attrs in _queue_blocks(blocks_text).items():
        if attrs.get("queue_type", "Execution").lower().startswith("r"):
            continue  # a routing queue runs nothing itself
        row = limits.get(name) or next(  # qstat -q cuts names at 16 characters
            (r for n, r in limits.items() if len(n) == 16 and name.startswith(n)), []
        )
        counts = state_counts(attrs.get("state_count", ""))
        walltime = pbs_duration(attrs.get("resources_max.walltime", ""))
        if walltime is None and row:
            walltime = pbs_duration(row[3])
        max_nodes = pbs_int(attrs.get("resources_max.nodect", "")) or (
            pbs_int(row[4]) if row else 0
        )
        if counts:
            queued = counts.get("queued", 0) + counts.get("held", 0) + counts.get("waiting", 0)
            running = counts.get("running", 0) + counts.get("exiting", 0)
        else:
            queued, running = (pbs_int(row[6]), pbs_int(row[5])) if row else (0, 0)
        available = truthy(attrs.get("enabled")) and truthy(attrs.get("started"))
        queues.append(_Queue(name, available, walltime, max_nodes or None, queued, running, None))
    return queues


def _json(text: str, key: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    data = json.loads(text, strict=False)  # raw control characters occur in PBS values
    section = data.get(key) if isinstance(data, dict) else None
    return section if isinstance(section, dict) else {}


def _pbspro_nodes(text: str) -> list[_Node]:
    nodes = []
    for name, attrs in _json(text, "nodes").items():
        available = attrs.get("resources_available") or {}
        assigned = attrs.get("resources_assigned") or {}
        states = node_states(attrs.get("state", ""))
        cpus = pbs_int(available.get("ncpus", attrs.get("pcpus", 0)))
        full = _FULL_NODE_STATES.intersection(states)
        held = cpus if full else pbs_int(assigned.get("ncpus", 0))
        condition = node_condition(states)
        if condition == "idle" and held:
            condition = "allocated"  # "free" with CPUs assigned: partly used
        gpus = pbs_int(available.get("ngpus", 0))
        nodes.append(
            _Node(
                name,
                condition,
                cpus,
                min(held, cpus),
                pbs_size_mib(available.get("mem", "")),
                {"gpu": gpus} if gpus else {},
                {"gpu": min(pbs_int(assigned.get("ngpus", 0)), gpus)} if gpus else {},
                attrs.get("queue") or None,
            )
        )
    return nodes


def _pbspro_queues(text: str) -> list[_Queue]:
    queues = []
    for name, attrs in _json(text, "Queue").items():
        if str(attrs.get("queue_type", "Execution")).lower().startswith("r"):
            continue
        most = attrs.get("resources_max") or {}
        counts = state_counts(attrs.get("state_count", ""))
        queues.append(
            _Queue(
                name,
                truthy(attrs.get("enabled")) and truthy(attrs.get("started")),
                pbs_duration(most.get("walltime", "")),
                pbs_int(most.get("nodect", "")) or None,
                counts.get("queued", 0) + counts.get("held", 0) + counts.get("waiting", 0),
                counts.get("running", 0) + counts.get("exiting", 0) + counts.get("begun", 0),
                counts.get("queued", 0),
            )
        )
    return queues


def _server_default_queue(text: str, dialect: str) -> str | None:
    if dialect == "pbspro":
        for server in _json(text, "Server").values():
            if isinstance(server, dict) and server.get("default_queue"):
                return str(server["default_queue"])
        return None
    match = re.search(r"^\s+default_queue = (\S+)", text, re.MULTILINE)
    return match.group(1) if match else None


# ------------------------------------------------------------ the parser


def _nodes_of(queue: str, nodes: list[_Node], dialect: str) -> list[_Node]:
    if dialect != "pbspro":
        return nodes
    own = [n for n in nodes if n.queue == queue]
    return own or [n for n in nodes if n.queue is None]


def _estimated_wait(queue: _Queue, cores_idle: int) -> float | None:
    if queue.available and queue.waiting_ahead == 0 and cores_idle > 0:
        return 0.0
    return None


def parse_load(
    stdout: str, now: float, dialect: str, default_queue: str | None = None
) -> CenterLoad:
    """The command's output -> the center's load. `default_queue` (the center's
    configured one) marks the default queue where the server does not name one.
    Raises ValueError on output that is not the dialect's."""
    parts = [*stdout.split(SEPARATOR + "\n"), "", "", "", ""]
    if dialect == "pbspro":
        nodes_text, queues_text, server_text = parts[:3]
        nodes = _pbspro_nodes(nodes_text)
        queues = _pbspro_queues(queues_text)
    else:
        nodes_text, queues_text, limits_text, server_text, jobs_text = parts[:5]
        nodes = _torque_nodes(nodes_text, _running_cpus_by_node(jobs_text))
        queues = _torque_queues(queues_text, limits_text)
    default = _server_default_queue(server_text, dialect) or default_queue
    if default is None and len(queues) == 1:
        default = queues[0].name  # the only queue is where a job without -q goes
    loads = []
    for queue in queues:
        members = _nodes_of(queue.name, nodes, dialect)
        sums = sum_nodes(members)
        loads.append(
            PartitionLoad.of(
                sums,
                name=queue.name,
                default=queue.name == default,
                available=queue.available,
                cores_per_node=max((n.cpus for n in members), default=0),
                memory_per_node_mib=max((n.memory_mib for n in members), default=0),
                max_walltime_seconds=queue.max_walltime,
                max_nodes_per_job=queue.max_nodes,
                jobs_queued=queue.queued,
                jobs_running=queue.running,
                estimated_wait_seconds=_estimated_wait(queue, sums.cores_idle),
            )
        )
    return CenterLoad(
        tuple(loads),
        now,
        jobs_queued=sum(q.queued for q in queues),
        jobs_running=sum(q.running for q in queues),
        totals=sum_nodes(nodes),
    )
