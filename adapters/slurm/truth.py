"""A Slurm center asked about one job alone (`scontrol show job`, then `sacct`), and
whether it keeps finished jobs: the queries `adapters.batch.truth` runs."""

from __future__ import annotations

import re
from collections.abc import Sequence

from adapters.base import JobState, NativeStatus
from adapters.batch.truth import SAID_LIMIT, HistorySettings, TruthQueries, exit_marked
from adapters.slurm.status import parse_sacct, slurm_state
from adapters.transport.framing import quote

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


def _slurm_commands(native_id: str) -> list[str]:
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
    said = " ".join(sacct_said.split())[:SAID_LIMIT]
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


SLURM_TRUTH = TruthQueries(
    commands=_slurm_commands,
    parse=_slurm_parse,
    history_script=exit_marked("sacct -X -n -j 1")
    + "; scontrol show config 2>/dev/null </dev/null",
    parse_history=parse_slurm_history,
)
