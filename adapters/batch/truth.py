"""What a batch center says about one job asked about alone, and how long it remembers
finished jobs: the reference the access evaluation holds the batched status path to.

The batched status query (`Adapter.status_many`) is what production relies on; a
scheduler front end that answers a query about many jobs wrongly (OpenPBS's
`qstat -f -F json ID1 ID2` lists ID1 alone) is caught by comparing it with these
per-job answers: Slurm's `scontrol show job <id>` (then `sacct -j <id>`), PBS's
`qstat -f <id>` one id at a time, and the job directory's markers (exit status,
cancel) the job script leaves. Each answer costs one remote command; they are
not counted in `remote_commands`, which counts production's job traffic.

The queries are kept per adapter family ("slurm", "pbs") in `_QUERIES`, beside the
pure parsers they use, so the adapters themselves stay as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adapters.base import Adapter, JobState, NativeStatus
from adapters.batch.adapter import JobDirAdapter
from adapters.batch.jobdir import quote
from adapters.batch.markers import (
    JobMarkers,
    all_markers_command,
    parse_markers,
    settle,
    status_from_markers,
)
from adapters.errors import AdapterError
from adapters.pbs.adapter import build_requery_command
from adapters.pbs.parse import match_ids, parse_pbspro_json, parse_torque_qstat
from adapters.slurm.adapter import parse_sacct, slurm_state

#: Between the parts of one truth command's output: `<mark> <exit status>` on a line.
_PART = "--hpcfed-truth--"
_PART_RE = re.compile(rf"\n?{_PART} (\d+)\n")
_SAID_LIMIT = 600

Phase = str  # "queued", "running", "ended" or "unknown"
#: A scheduler's per-job answers (exit status, output) -> the job's status, if it knows it.
_Parse = Callable[[str, Sequence[tuple[int, str]]], "NativeStatus | None"]


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


# ------------------------------------------------------------ Slurm

_SCONTROL_RE = re.compile(r"(?:^|\s)(JobId|JobState|Reason|ExitCode|ArrayJobId)=(\S*)")
_EXIT_RE = re.compile(r"(\d+):(\d+)")


def parse_scontrol_job(text: str, native_id: str) -> NativeStatus | None:
    """`scontrol show job -o <id>` (one line per job) -> that job's status, or None when
    it does not list the job (it forgets a finished job after MinJobAge)."""
    for line in text.splitlines():
        fields = dict(_SCONTROL_RE.findall(line))
        if fields.get("JobId") != native_id or "JobState" not in fields:
            continue
        native, reason = fields["JobState"], fields.get("Reason") or None
        reason = None if reason in (None, "None", "(null)") else reason
        state = slurm_state(native, reason)
        code = None
        match = _EXIT_RE.fullmatch(fields.get("ExitCode", ""))
        if match and state in (JobState.COMPLETED, JobState.FAILED):
            status, signal = int(match.group(1)), int(match.group(2))
            code = 128 + signal if signal else status
        return NativeStatus(native_id, state, native, reason, code)
    return None


def _slurm_commands(adapter: JobDirAdapter, native_id: str) -> list[str]:
    nid = quote(native_id)
    return [
        f"scontrol show job -o {nid}",
        f"sacct -X --parsable2 --noheader --format=JobID,State,ExitCode,Reason -j {nid}",
    ]


def _slurm_parse(native_id: str, answers: Sequence[tuple[int, str]]) -> NativeStatus | None:
    (rc, out), *rest = answers
    found = parse_scontrol_job(out, native_id) if rc == 0 else None
    if found is None and rest:
        rc, out = rest[0]
        found = parse_sacct(out).get(native_id) if rc == 0 else None
    return found


def parse_slurm_history(sacct_rc: int, sacct_said: str, config: str) -> HistorySettings:
    """`sacct` of a job (its exit status and message) and `scontrol show config`."""
    min_age = re.search(r"^MinJobAge\s*=\s*(\d+)", config, re.MULTILINE)
    age = f"{min_age.group(1)} s" if min_age else "MinJobAge"
    command = "sacct -X -n -j 1; scontrol show config"
    said = " ".join(sacct_said.split())[:_SAID_LIMIT]
    if sacct_rc == 0 and "disabled" not in sacct_said:
        return HistorySettings(
            True,
            command,
            said or "sacct answers",
            "accounting answers (sacct): a finished job's state and exit code stay known to "
            "the scheduler, and its job directory confirms them",
        )
    return HistorySettings(
        False,
        command,
        said or f"sacct exited {sacct_rc}",
        f"no accounting: a finished job is known to squeue/scontrol for {age} (MinJobAge), "
        "after that only from its job directory (exit marker)",
    )


# ------------------------------------------------------------ PBS


def _pbs_commands(adapter: JobDirAdapter, native_id: str) -> list[str]:
    nid = quote(native_id)
    if getattr(adapter, "dialect", "torque") == "pbspro":
        # One id in JSON (which lists one id right), from the history where it is kept:
        # with job history off, `-x` would make qstat answer nothing, live jobs included.
        return [build_requery_command([native_id])]
    return [f"TZ=UTC0 qstat -f {nid}"]


def _pbs_parse_for(dialect: str) -> _Parse:
    def parse(native_id: str, answers: Sequence[tuple[int, str]]) -> NativeStatus | None:
        rc, out = answers[0]
        if rc not in (0, 153):  # 153: "Unknown Job Id"
            return None
        if dialect == "pbspro":
            # Its stderr came with it ("PBS is not configured to maintain job history"):
            # the JSON document is what lies between the outer braces.
            out = out[out.find("{") : out.rfind("}") + 1] if "{" in out else ""
        try:
            listed = parse_pbspro_json(out) if dialect == "pbspro" else parse_torque_qstat(out)
        except ValueError:  # broken JSON: no answer about the job
            return None
        return match_ids([native_id], listed).get(native_id)

    return parse


def _server_attributes(rc: int, text: str, dialect: str) -> dict[str, str]:
    """The server's attributes from `qstat -B -f` (PBS Pro: its JSON form)."""
    if rc != 0:
        return {}
    if dialect == "pbspro":
        try:
            doc = json.loads(text[text.find("{") : text.rfind("}") + 1], strict=False)
        except ValueError:
            return {}
        servers = doc.get("Server") if isinstance(doc, dict) else None
        first = next(iter(servers.values()), {}) if isinstance(servers, dict) and servers else {}
        return {str(k): str(v) for k, v in first.items()} if isinstance(first, dict) else {}
    return dict(re.findall(r"^\s*(\w+)\s*=\s*(.*?)\s*$", text, re.MULTILINE))


def parse_pbs_history(rc: int, text: str, dialect: str) -> HistorySettings:
    """`qstat -B -f` (the server's attributes): PBS Pro's `job_history_enable` (unset
    by default), Torque's `keep_completed`; Slurm's Torque wrapper refuses the option."""
    command = "qstat -B -f -F json" if dialect == "pbspro" else "qstat -B -f"
    attrs = _server_attributes(rc, text, dialect)
    if dialect == "pbspro" and attrs:
        if attrs.get("job_history_enable", "").lower() in ("true", "1", "t", "y"):
            keep = attrs.get("job_history_duration", "the server's default (two weeks)")
            return HistorySettings(
                True,
                command,
                f"job_history_enable = True; job_history_duration = {keep}",
                f"job history is on: qstat -x reports finished jobs (state F, Exit_status) "
                f"for {keep}, and their job directory confirms them",
            )
        return HistorySettings(
            False,
            command,
            "job_history_enable is not set (the default)",
            "job history is off: a finished job vanishes from every qstat answer at once; "
            "its end is known only from its job directory (exit marker)",
        )
    if "keep_completed" in attrs:
        keep = attrs["keep_completed"]
        return HistorySettings(
            keep not in ("0", ""),
            command,
            f"keep_completed = {keep}",
            f"finished jobs stay listed as C for {keep} s; after that (and for their exit "
            "status) the job directory tells how they ended",
        )
    said = " ".join(text.split())[:_SAID_LIMIT]
    return HistorySettings(
        None,
        command,
        said or f"qstat -B -f exited {rc}",
        "the server does not report its job-history settings: a finished job may be "
        "listed as C briefly, without an exit status; how it ended comes from its job "
        "directory (exit marker)",
    )


# ------------------------------------------------------------ running them


def _queries(adapter: Adapter) -> tuple[Callable[[JobDirAdapter, str], list[str]], _Parse]:
    if not isinstance(adapter, JobDirAdapter) or adapter.family not in ("slurm", "pbs"):
        raise AdapterError(
            f"center {adapter.center_id}: no per-job query for this kind of center",
            center=adapter.center_id,
        )
    if adapter.family == "slurm":
        return _slurm_commands, _slurm_parse
    return _pbs_commands, _pbs_parse_for(getattr(adapter, "dialect", "torque"))


def _chain(commands: Sequence[str]) -> str:
    """Each command (stderr with stdout: its messages are part of what it said), then
    its exit status on a line of its own."""
    return "; ".join(
        f"{{ {command} ; }} </dev/null 2>&1; printf '\\n%s %d\\n' {_PART} $?"
        for command in commands
    )


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
    commands_of, parse = _queries(adapter)
    assert isinstance(adapter, JobDirAdapter)
    commands = commands_of(adapter, native_id)
    marker_cmd, stdin = all_markers_command(await adapter.root(), [gateway_id])
    result = await adapter.connection.run(f"{_chain(commands)}; {marker_cmd}", stdin=stdin)
    answers, rest = _split(result.stdout.decode(errors="replace"), len(commands))
    if len(answers) < len(commands):
        raise AdapterError(
            f"center {adapter.center_id}: the per-job query of {native_id} was cut short "
            f"(exit {result.exit_status}): {result.stderr.decode(errors='replace')[:300]}",
            center=adapter.center_id,
        )
    scheduler = parse(native_id, answers)
    markers = parse_markers(rest).get(gateway_id)
    said = " | ".join(" ".join(text.split()) or f"(nothing, exit {rc})" for rc, text in answers)
    return JobTruth(
        native_id=native_id,
        scheduler=scheduler,
        directory=status_from_markers(native_id, markers) if _ended_in_directory(markers) else None,
        status=combine(native_id, scheduler, markers),
        command="; ".join(commands) + "; the job directory's markers",
        said=said[:_SAID_LIMIT],
    )


async def history_settings(adapter: Adapter) -> HistorySettings:
    """Whether the center's scheduler keeps finished jobs queryable (one remote command)."""
    _queries(adapter)  # refuses kinds of center without a batch scheduler
    assert isinstance(adapter, JobDirAdapter)
    if adapter.family == "slurm":
        script = (
            "sacct -X -n -j 1 2>&1 </dev/null; "
            f"printf '\\n%s %d\\n' {_PART} $?; scontrol show config 2>/dev/null </dev/null"
        )
        out = (await adapter.connection.run(script)).stdout.decode(errors="replace")
        answers, rest = _split(out, 1)
        rc, said = answers[0] if answers else (255, out)
        return parse_slurm_history(rc, said, rest)
    dialect = getattr(adapter, "dialect", "torque")
    query = "qstat -B -f -F json" if dialect == "pbspro" else "qstat -B -f"
    script = f"{query} 2>&1 </dev/null; printf '\\n%s %d\\n' {_PART} $?"
    out = (await adapter.connection.run(script)).stdout.decode(errors="replace")
    answers, _ = _split(out, 1)
    rc, said = answers[0] if answers else (255, out)
    return parse_pbs_history(rc, said, dialect)
