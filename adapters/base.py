"""The contract every center type implements, and the types it speaks in.

Adapters never import gateway code: the gateway hands them an already
validated `JobRequest` and receives `NativeStatus` values back. Everything an
adapter raises derives from `AdapterError`, so the gateway maps failures to
HTTP in one place.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, get_args

from adapters.errors import AdapterError, InvalidCall

#: Gateway job ids are UUIDs; adapters rely on this to build remote paths.
GATEWAY_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


class JobState(StrEnum):
    """The normalized states, one set for every scheduler."""

    SUBMITTING = "SUBMITTING"  # accepted by the gateway, not yet at the center
    QUEUED = "QUEUED"
    HELD = "HELD"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMEOUT = "TIMEOUT"
    UNKNOWN = "UNKNOWN"  # the center cannot be reached, or the state is not mapped

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT}
)

#: How a job may depend on another at the same center: "afterok" (it completed),
#: "afternotok" (it failed, timed out or was cancelled), "afterany" (it ended),
#: "after" (it started).
DependencyCondition = Literal["afterok", "afternotok", "afterany", "after"]
DEPENDENCY_CONDITIONS: tuple[DependencyCondition, ...] = get_args(DependencyCondition)

#: Dependency conditions: the parent states in which each holds for good.
DEPENDENCY_SATISFIED_BY: dict[DependencyCondition, frozenset[JobState]] = {
    "afterok": frozenset({JobState.COMPLETED}),
    "afternotok": frozenset({JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED}),
    "afterany": TERMINAL_STATES,
    "after": TERMINAL_STATES | {JobState.RUNNING, JobState.SUSPENDED},  # it has started
}

#: A directive argument passed through verbatim to a scheduler (JSON Schema's form, as
#: request models check it): no quotes, `$`, backticks, `#`, `;`, `&`, `|`, `<`, `>` or
#: line breaks, so a scheduler's directive parser splits it on blanks only, and a submit
#: command that hands directives to a shell runs nothing of it.
DIRECTIVE_PATTERN = r"^--?[A-Za-z0-9][A-Za-z0-9 =:,._/+@%\[\]-]*$"
#: The same for Python's `re`, where `$` would also match before a final line break.
DIRECTIVE_RE = re.compile(DIRECTIVE_PATTERN.removesuffix("$") + r"\Z")


@dataclass(frozen=True)
class JobRequest:
    """A normalized, validated job as an adapter receives it.

    Units are already resolved: memory in MiB, walltime in seconds. Exactly one
    of `script` (a batch script body) and `command` is set.
    """

    gateway_id: str
    name: str
    script: str | None = None
    command: str | None = None
    arguments: Sequence[str] = ()
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    gpu_type: str | None = None
    memory_per_node_mib: int | None = None
    walltime_seconds: int | None = None
    queue: str | None = None
    account: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    qos: str | None = None
    #: Array indices in the common syntax: "0-3", "1,3,5-7", "0-15:2", with an
    #: optional "%N" limit on elements running at once. None: not an array.
    array: str | None = None
    #: (condition, native id of a job at the same center); the conditions are
    #: `DEPENDENCY_CONDITIONS`.
    dependencies: Sequence[tuple[str, str]] = ()
    #: Raw directive arguments for this center's scheduler, e.g. "--exclusive"
    #: or "-l place=scatter"; each matches `DIRECTIVE_RE`.
    extra_directives: Sequence[str] = ()

    def __post_init__(self) -> None:
        if not GATEWAY_ID_RE.match(self.gateway_id):
            raise ValueError(f"gateway_id must be a lowercase UUID, got {self.gateway_id!r}")
        if (self.script is None) == (self.command is None):
            raise ValueError("exactly one of script and command must be set")
        for name in self.environment:
            if not ENV_NAME_RE.match(name):
                raise ValueError(f"environment variable name {name!r} is not a valid name")


@dataclass(frozen=True)
class ArrayElement:
    """One element of an array job."""

    index: int
    native_id: str  # e.g. "123_4" (Slurm), "123[4].server" (PBS)
    state: JobState
    native_state: str
    reason: str | None = None
    exit_code: int | None = None
    started_at: float | None = None  # epoch seconds, as the center tells it
    ended_at: float | None = None


#: native_state of a job that the scheduler's answer left out and whose end nothing at the
#: center confirms (no exit status in its job directory, no final record in the
#: scheduler's history): not an end. The gateway keeps what it knew and asks again.
NOT_LISTED = "NOT_LISTED"


@dataclass(frozen=True)
class NativeStatus:
    """What a center says about one job, normalized beside its native form.

    For an array job, `elements` lists every element the center reports
    (pending ranges expanded to their indices) or whose end its job directory
    records; the gateway derives the whole job's state from them.
    """

    native_id: str
    state: JobState
    native_state: str
    reason: str | None = None
    exit_code: int | None = None
    elements: Sequence[ArrayElement] = ()
    #: When the job started and ended running (epoch seconds), as the center tells
    #: it; None where it cannot be told. Usage and billing are computed from these.
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def unlisted(self) -> bool:
        """The center did not list the job (or some of its elements) and nothing there
        confirms an end: what the gateway knew of it still holds."""
        return self.native_state == NOT_LISTED or any(
            e.native_state == NOT_LISTED for e in self.elements
        )


@dataclass(frozen=True)
class GpuLoad:
    """The GPUs of one model in a partition."""

    model: str  # the scheduler's type name, e.g. "a100"; "gpu" when untyped
    total: int
    allocated: int
    per_node: int  # the most one node of the partition has


@dataclass(frozen=True)
class PartitionLoad:
    """One partition (Slurm) or queue (PBS) as its scheduler reports it now."""

    name: str
    default: bool
    available: bool  # the scheduler accepts and starts jobs in it
    nodes_total: int
    nodes_idle: int
    nodes_allocated: int  # wholly or partly allocated ("mixed" counts here)
    nodes_down: int  # down, drained, failing: not usable now
    cores_total: int
    cores_idle: int
    cores_allocated: int
    cores_down: int
    cores_per_node: int  # the most one node has
    memory_per_node_mib: int  # the most one node has
    max_walltime_seconds: int | None  # None: no limit
    max_nodes_per_job: int | None = None
    gpus: tuple[GpuLoad, ...] = ()
    jobs_queued: int = 0
    jobs_running: int = 0
    #: The scheduler's own estimate of when a job queued now would start, in seconds
    #: from the query (0: it would start at once); None when it gives none.
    estimated_wait_seconds: float | None = None

    @classmethod
    def of(cls, sums: CenterTotals, **fields: object) -> PartitionLoad:
        """A partition whose node, core and GPU counts are `sums` (of its nodes)."""
        return cls(
            nodes_total=sums.nodes_total,
            nodes_idle=sums.nodes_idle,
            nodes_allocated=sums.nodes_allocated,
            nodes_down=sums.nodes_down,
            cores_total=sums.cores_total,
            cores_idle=sums.cores_idle,
            cores_allocated=sums.cores_allocated,
            cores_down=sums.cores_down,
            gpus=sums.gpus,
            **fields,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class CenterLoad:
    """What a center's scheduler says about its capacity and use, from one query."""

    partitions: tuple[PartitionLoad, ...]
    queried_at: float  # epoch seconds
    jobs_queued: int = 0  # the whole center's, every user's
    jobs_running: int = 0
    #: The whole center with each node counted once (partitions may share nodes);
    #: None when the parser could not tell nodes apart (then partitions are summed).
    totals: CenterTotals | None = None


@dataclass(frozen=True)
class CenterTotals:
    nodes_total: int
    nodes_idle: int
    nodes_allocated: int
    nodes_down: int
    cores_total: int
    cores_idle: int
    cores_allocated: int
    cores_down: int
    gpus: tuple[GpuLoad, ...] = ()


#: The job output files `Adapter.read_output` reads.
OUTPUT_STREAMS = ("stdout", "stderr")


@dataclass(frozen=True)
class OutputRequest:
    """What `Adapter.read_output` was asked for, checked."""

    native_id: str
    gateway_id: str
    stream: str  # one of OUTPUT_STREAMS
    offset: int
    limit: int
    element: int | None  # the index of an array job's element; None for a plain job


@dataclass(frozen=True)
class OutputChunk:
    """A slice of a job's stdout or stderr file."""

    data: bytes
    offset: int  # where `data` starts in the file
    size: int | None  # the file's whole size when known
    exists: bool = True


class Adapter(abc.ABC):
    """One center. All methods are coroutines and bounded by timeouts.

    `status_many` is the batched query the poller calls once per tick per
    center; it must cost a small constant number of remote commands whatever
    the number of jobs (counted in `remote_commands`).
    """

    center_id: str
    remote_commands: int = 0

    @abc.abstractmethod
    async def submit(self, job: JobRequest) -> str:
        """Submit and return the native job id."""

    async def submit_many(self, jobs: Sequence[JobRequest]) -> list[str | Exception]:
        """Submit several jobs; per job its native id or the error `submit` would raise.

        Adapters that can send many jobs in few remote commands override this."""
        outcomes = await asyncio.gather(*(self.submit(j) for j in jobs), return_exceptions=True)
        out: list[str | Exception] = []
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancellation, KeyboardInterrupt: not a job's outcome
            out.append(outcome)
        return out

    @abc.abstractmethod
    async def status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        """Return the status of each job in `jobs` (native id -> gateway id).

        A job the center no longer reports and whose final state cannot be
        learned is omitted; the caller keeps its last known state.
        """

    @abc.abstractmethod
    async def find_by_gateway_id(self, gateway_ids: Sequence[str]) -> dict[str, str]:
        """Return gateway id -> native id for jobs already at the center.

        Used to reconcile an uncertain submission instead of repeating it.
        """

    @abc.abstractmethod
    async def cancel(self, native_id: str, gateway_id: str) -> None:
        """Ask the center to cancel the job. Cancelling a finished job is not an error."""

    async def read_output(
        self,
        native_id: str,
        gateway_id: str,
        stream: str,
        offset: int = 0,
        limit: int = 1 << 20,
        element: int | None = None,
    ) -> OutputChunk:
        """Read up to `limit` bytes of 'stdout' or 'stderr' from `offset` (of array
        element `element` for an array job); InvalidCall for what is none of these."""
        if stream not in OUTPUT_STREAMS:
            raise InvalidCall(
                f"stream must be stdout or stderr, got {stream!r}", center=self.center_id
            )
        if offset < 0 or limit < 0:
            raise InvalidCall("offset and limit must not be negative", center=self.center_id)
        if element is not None and (isinstance(element, bool) or element < 0):
            raise InvalidCall(
                f"element must be an array index, got {element!r}", center=self.center_id
            )
        request = OutputRequest(native_id, gateway_id, stream, offset, limit, element)
        return await self.output_chunk(request)

    async def output_chunk(self, request: OutputRequest) -> OutputChunk:
        """`read_output`'s reading, of a checked request: what an adapter implements. A
        file that does not exist (yet) is an empty chunk with `exists=False`."""
        raise AdapterError(f"center {self.center_id} serves no job output", center=self.center_id)

    async def load(self) -> CenterLoad:
        """Partitions, nodes, cores, GPUs and queue of the whole center, from one
        remote command. Raises CenterUnavailable / CommandFailed when the center or
        its scheduler does not answer."""
        raise AdapterError(
            f"center {self.center_id} does not report its load", center=self.center_id
        )

    async def ping(self) -> None:
        """Whether the scheduler answers now, from one remote command; raises
        CenterUnavailable / CommandFailed when it does not."""
        raise AdapterError(
            f"center {self.center_id} cannot be asked whether its scheduler answers",
            center=self.center_id,
        )

    async def job_workdir(self, gateway_id: str, working_dir: str | None) -> str:
        """The absolute directory the job runs in: `working_dir` resolved at the center,
        or the job's own directory there. Staged inputs go here."""
        raise AdapterError(f"center {self.center_id} cannot stage files", center=self.center_id)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
