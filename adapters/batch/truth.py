"""What a batch center says about one job asked about alone, and how long it remembers
finished jobs: the reference the access evaluation holds the batched status path to.

The batched status query (`Adapter.status_many`) is what production relies on; a
scheduler front end that answers a query about many jobs wrongly (OpenPBS's
`qstat -f -F json ID1 ID2` lists ID1 alone) is caught by comparing it with these
per-job answers: Slurm's `scontrol show job <id>` (then `sacct -j <id>`), PBS's
`qstat -f <id>` one id at a time, and the job directory's markers (exit status,
cancel) the job script leaves. Each answer costs one remote command; they are
not counted in `remote_commands`, which counts production's job traffic.

Each scheduler's queries (`TruthQueries`) live in its package (`adapters.slurm.truth`,
`adapters.pbs.truth`); an adapter that can be asked this way offers them with
`truth_queries()`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from adapters.base import Adapter, JobState, NativeStatus
from adapters.batch.adapter import JobDirAdapter
from adapters.batch.markers import JobMarkers, all_markers_command, parse_markers
from adapters.batch.settle import settle, status_from_markers
from adapters.errors import AdapterError

#: Between the parts of one truth command's output: `<mark> <exit status>` on a line.
_PART = "--hpcfed-truth--"
_PART_RE = re.compile(rf"\n?{_PART} (\d+)\n")
SAID_LIMIT = 600

Phase = str  # "queued", "running", "ended" or "unknown"
#: A scheduler's per-job answers (exit status, output) -> the job's status, if it knows it.
_Parse = Callable[[str, Sequence[tuple[int, str]]], "NativeStatus | None"]


@dataclass(frozen=True)
class TruthQueries:
    """How one scheduler is asked about one job alone, and about its job history."""

    #: native id -> the commands whose answers `parse` reads (each run by `ask_one`).
    commands: Callable[[str], list[str]]
    parse: _Parse
    #: One script: a command marked by `exit_marked`, then what else `parse_history` reads.
    history_script: str
    #: (the first command's exit status, its output, what followed) -> the settings.
    parse_history: Callable[[int, str, str], HistorySettings]


@runtime_checkable
class AsksOneJob(Protocol):
    """An adapter whose scheduler can be asked about one job alone."""

    def truth_queries(self) -> TruthQueries: ...


def exit_marked(command: str) -> str:
    """The command (stderr with stdout: its messages are part of what it said), then
    its exit status on a line of its own."""
    return f"{{ {command} ; }} </dev/null 2>&1; printf '\\n%s %d\\n' {_PART} $?"


def phase_of(state: JobState | None) -> Phase:
    """The part of a job's life a state belongs to, as the evaluation compares them."""
    if state is None or state is JobState.UNKNOWN:
        return "unknown"
    if state.is_terminal:
        return "ended"
    if state in (JobState.RUNNING, JobState.SUSPENDED):
        return "running"
    return "queued"  # SUBMITTING, QUEUED, HELD


@dataclass(frozen=True)
class JobTruth:
    """One job as its center tells it when asked about that job alone."""

    native_id: str
    #: The scheduler's own answer about the job (None: it does not know the job now).
    scheduler: NativeStatus | None
    #: What the job directory's markers say, when they record an end (None: no end there).
    directory: NativeStatus | None
    #: The two together: the job's state, native state and exit code as the center has them.
    status: NativeStatus
    command: str  # what was asked, as a person reads it
    said: str  # what the scheduler printed, cut short

    @property
    def phase(self) -> Phase:
        return phase_of(self.status.state)

    def evidence(self) -> dict[str, object]:
        return {
            "asked": self.command,
            "state": self.status.state.value,
            "native_state": self.status.native_state,
            "exit_code": self.status.exit_code,
            "reason": self.status.reason,
            "from": "scheduler" if self.scheduler is not None else "job directory",
            "said": self.said,
        }


@dataclass(frozen=True)
class HistorySettings:
    """Whether the scheduler keeps finished jobs, and what follows for the gateway."""

    #: True: the scheduler's own record of a finished job stays queryable (accounting,
    #: PBS job history); False: it does not; None: the center does not say.
    keeps_history: bool | None
    command: str
    said: str
    implication: str  # one sentence for the report


def _ended_in_directory(markers: JobMarkers | None) -> bool:
    m = markers
    return m is not None and (m.exit_code is not None or m.cancelled or m.terminated is not None)


def combine(
    native_id: str, scheduler: NativeStatus | None, markers: JobMarkers | None
) -> NativeStatus:
    """The center's word on one job: the scheduler's record, completed by the job
    directory where the record says "ended" without saying how (Torque's `C`) or where
    the job ended after the scheduler answered. Nothing is taken as an end without a
    record of it: a job neither knows is UNKNOWN."""
    in_dir = _ended_in_directory(markers)
    if scheduler is not None and scheduler.state is not JobState.UNKNOWN:
        if scheduler.state.is_terminal:
            return settle(native_id, scheduler, markers)
        if in_dir and markers is not None and markers.exit_code is not None:
            return status_from_markers(native_id, markers)
        return scheduler
    if in_dir:
        return status_from_markers(native_id, markers)
    return NativeStatus(
        native_id,
        JobState.UNKNOWN,
        scheduler.native_state if scheduler else "NOT_KNOWN",
        "the scheduler does not report the job and its directory records no end",
    )


# ------------------------------------------------------------ running them


def _queries(adapter: Adapter) -> tuple[JobDirAdapter, TruthQueries]:
    if not isinstance(adapter, JobDirAdapter) or not isinstance(adapter, AsksOneJob):
        raise AdapterError(
            f"center {adapter.center_id}: no per-job query for this kind of center",
            center=adapter.center_id,
        )
    return adapter, adapter.truth_queries()


def _chain(commands: Sequence[str]) -> str:
    return "; ".join(exit_marked(command) for command in commands)


def _split(out: str, count: int) -> tuple[list[tuple[int, str]], str]:
    """(exit status, output) of each of `count` chained commands, and what followed."""
    answers, rest = [], out
    for _ in range(count):
        match = _PART_RE.search(rest)
        if match is None:
            break
        answers.append((int(match.group(1)), rest[: match.start()]))
        rest = rest[match.end() :]
    return answers, rest


async def ask_one(adapter: Adapter, native_id: str, gateway_id: str) -> JobTruth:
    """Ask the center about one job alone: the scheduler's per-job answer(s) and the
    job directory's markers, in one remote command."""
    adapter, queries = _queries(adapter)
    commands = queries.commands(native_id)
    marker_cmd, stdin = all_markers_command(await adapter.root(), [gateway_id])
    result = await adapter.connection.run(f"{_chain(commands)}; {marker_cmd}", stdin=stdin)
    answers, rest = _split(result.stdout.decode(errors="replace"), len(commands))
    if len(answers) < len(commands):
        raise AdapterError(
            f"center {adapter.center_id}: the per-job query of {native_id} was cut short "
            f"(exit {result.exit_status}): {result.stderr.decode(errors='replace')[:300]}",
            center=adapter.center_id,
        )
    scheduler = queries.parse(native_id, answers)
    markers = parse_markers(rest).get(gateway_id)
    said = " | ".join(" ".join(text.split()) or f"(nothing, exit {rc})" for rc, text in answers)
    return JobTruth(
        native_id=native_id,
        scheduler=scheduler,
        directory=status_from_markers(native_id, markers) if _ended_in_directory(markers) else None,
        status=combine(native_id, scheduler, markers),
        command="; ".join(commands) + "; the job directory's markers",
        said=said[:SAID_LIMIT],
    )


async def history_settings(adapter: Adapter) -> HistorySettings:
    """Whether the center's scheduler keeps finished jobs queryable (one remote command)."""
    adapter, queries = _queries(adapter)  # refuses kinds of center without a batch scheduler
    out = (await adapter.connection.run(queries.history_script)).stdout.decode(errors="replace")
    answers, rest = _split(out, 1)
    rc, said = answers[0] if answers else (255, out)
    return queries.parse_history(rc, said, rest)
