"""A PBS center asked about one job alone (`qstat -f <id>`; PBS Pro: in JSON, from its
history where kept), and whether it keeps finished jobs: the queries
`adapters.batch.truth` runs."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence

from adapters.base import NativeStatus
from adapters.batch.truth import SAID_LIMIT, HistorySettings, TruthQueries, exit_marked
from adapters.pbs.commands import build_requery_command
from adapters.pbs.parse import match_ids, parse_pbspro_json, parse_torque_qstat
from adapters.transport.framing import quote


def _pbs_commands(native_id: str, dialect: str) -> list[str]:
    nid = quote(native_id)
    if dialect == "pbspro":
        # One id in JSON (which lists one id right), from the history where it is kept:
        # with job history off, `-x` would make qstat answer nothing, live jobs included.
        return [build_requery_command([native_id])]
    return [f"TZ=UTC0 qstat -f {nid}"]


def _pbs_parse_for(dialect: str) -> Callable[[str, Sequence[tuple[int, str]]], NativeStatus | None]:
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
    said = " ".join(text.split())[:SAID_LIMIT]
    return HistorySettings(
        None,
        command,
        said or f"qstat -B -f exited {rc}",
        "the server does not report its job-history settings: a finished job may be "
        "listed as C briefly, without an exit status; how it ended comes from its job "
        "directory (exit marker)",
    )


def pbs_truth(dialect: str) -> TruthQueries:
    """The queries of a PBS center of `dialect`."""
    query = "qstat -B -f -F json" if dialect == "pbspro" else "qstat -B -f"
    return TruthQueries(
        commands=lambda native_id: _pbs_commands(native_id, dialect),
        parse=_pbs_parse_for(dialect),
        history_script=exit_marked(query),
        parse_history=lambda rc, said, rest: parse_pbs_history(rc, said, dialect),
    )
