"""Reading a job directory's marker files back, in one remote command for many jobs.

The files are written by job.sh (`adapters.batch.jobdir.render_body`), by the submit
command (`native_id`) and by a cancel through us (`cancelled`); how a job ended is
settled from them and from what the scheduler still says in `adapters.batch.settle`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from adapters.base import GATEWAY_ID_RE
from adapters.batch.jobdir import (
    ARRAY,
    CANCELLED,
    EXIT_CODE,
    NATIVE_ID,
    STARTED,
    TERMINATED,
    TIMES,
    array_indices,
    quote,
)

SEPARATOR = "--hpcfed-markers--"  # between parts of one command's output
_JOB_MARKERS = (NATIVE_ID, ARRAY, CANCELLED, EXIT_CODE, TERMINATED, TIMES)
_ELEMENT_MARKERS = (EXIT_CODE, TERMINATED, STARTED, TIMES)
_MARKER_RE = re.compile(
    rf"^(?:({'|'.join(_JOB_MARKERS)})|({'|'.join(_ELEMENT_MARKERS)})\.(\d{{1,9}}))\Z"
)
_EXIT_RE = re.compile(r"-?\d{1,9}")
#: An epoch in the `times` marker: `date +%s`, or EPOCHREALTIME with the locale's point.
_EPOCH_RE = re.compile(r"\d{1,12}(?:[.,]\d{1,9})?")
#: A TERM this close to the walltime (seconds, or a twentieth of it) was the walltime:
#: the scheduler counts from its own start of the job, a little before job.sh's.
_WALLTIME_SLACK = 10


@dataclass(frozen=True)
class Termination:
    """The `terminated` marker: the job got SIGTERM after `elapsed` seconds of `limit`."""

    elapsed: int | None = None
    limit: int | None = None  # None: the spec named no walltime

    @property
    def at_walltime(self) -> bool:
        if self.limit is None or self.elapsed is None:
            return True  # the center's own limit, or an unreadable marker: most likely
        return self.elapsed + max(_WALLTIME_SLACK, self.limit // 20) >= self.limit

    @classmethod
    def parse(cls, text: str) -> Termination:
        words = text.split()
        elapsed = int(words[0]) if words and words[0].isdigit() else None
        limit = int(words[1]) if len(words) > 1 and words[1].isdigit() else None
        return cls(elapsed, limit)


def parse_times(text: str) -> tuple[float | None, float | None]:
    """The `times` marker, "<start>" or "<start> <end>" -> (start, end); what is not an
    epoch is None, and so is an end before the start (the clock was stepped back)."""
    words = text.split()
    start, end = (_epoch(words[i]) if len(words) > i else None for i in (0, 1))
    if start is not None and end is not None and end < start:
        end = None
    return start, end


def _epoch(word: str) -> float | None:
    return float(word.replace(",", ".")) if _EPOCH_RE.fullmatch(word) else None


@dataclass(frozen=True)
class ElementMarkers:
    """One array element's files: its own scheduler id ("" if it had none), exit status,
    termination and when it started and ended running."""

    started: str | None = None
    exit_code: int | None = None
    terminated: Termination | None = None
    started_at: float | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class JobMarkers:
    native_id: str | None = None
    exit_code: int | None = None
    cancelled: bool = False
    terminated: Termination | None = None
    array: str | None = None  # the array spec written at submit
    elements: Mapping[int, ElementMarkers] = field(default_factory=dict)
    started_at: float | None = None  # from `times`: the job's own clock
    ended_at: float | None = None

    def element(self, index: int) -> JobMarkers:
        """The markers that decide one element's end: its own, and the job's cancel."""
        own = self.elements.get(index, ElementMarkers())
        # No native id: the job's was checked against the array's, and elements have others.
        return JobMarkers(
            None,
            own.exit_code,
            self.cancelled,
            own.terminated,
            started_at=own.started_at,
            ended_at=own.ended_at,
        )

    def indices(self) -> list[int]:
        """The indices the array spec names, or [] if there is none (or it is unreadable)."""
        try:
            return array_indices(self.array) if self.array else []
        except ValueError:
            return []


def markers_command(
    root: str, gateway_ids: Sequence[str], names: Sequence[str]
) -> tuple[str, bytes]:
    """One command printing `<gateway_id>/<file>:<line>` for each of the named files
    that exists. The file list travels on stdin, so the command line stays short
    however many jobs are asked about."""
    listing = "".join(f"{gid}/{name}\n" for gid in gateway_ids for name in names)
    command = f"cd {quote(posixpath.join(root, 'jobs'))} && xargs grep -s -H '' --"
    return command, listing.encode()


def all_markers_command(root: str, gateway_ids: Sequence[str]) -> tuple[str, bytes]:
    """Like `markers_command`, for every marker file of each job, elements' included
    (whose names depend on the array spec, so they are found, not listed). The
    gateway ids travel on stdin; `find` batches them into few `grep` runs. The times
    are read last: job.sh writes its end before its exit status, so a read that finds
    the exit status finds the end too."""
    names = [*_JOB_MARKERS, *(f"{name}.*" for name in _ELEMENT_MARKERS)]
    first = [name for name in names if not name.startswith(TIMES)]
    script = f"{_grep_found(first)}; {_grep_found([TIMES, TIMES + '.*'])}"
    jobs = quote(posixpath.join(root, "jobs"))
    command = f"cd {jobs} && xargs -r sh -c {quote(script)} sh 2>/dev/null"
    return command, "".join(f"{gid}\n" for gid in gateway_ids).encode()


def _grep_found(names: Sequence[str]) -> str:
    tests = " -o ".join(f'-name "{name}"' for name in names)
    return f'find "$@" -maxdepth 1 -type f \\( {tests} \\) -exec grep -s -H "" -- {{}} +'


def _exit_code(text: str) -> int | None:
    return int(text) if _EXIT_RE.fullmatch(text) else None


def parse_markers(text: str) -> dict[str, JobMarkers]:
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        path, sep, content = line.partition(":")
        gid, _, name = path.partition("/")
        if sep and GATEWAY_ID_RE.match(gid) and _MARKER_RE.match(name):
            found.setdefault(gid, {}).setdefault(name, content.strip())  # first line wins
    markers = {}
    for gid, files in found.items():
        elements: dict[int, dict[str, str]] = {}
        for name, content in files.items():
            match = _MARKER_RE.match(name)
            assert match is not None
            if match.group(2):
                elements.setdefault(int(match.group(3)), {})[match.group(2)] = content
        terminated = files.get(TERMINATED)
        started_at, ended_at = parse_times(files.get(TIMES, ""))
        markers[gid] = JobMarkers(
            native_id=files.get(NATIVE_ID, "").split(";")[0] or None,  # sbatch: "id;cluster"
            exit_code=_exit_code(files.get(EXIT_CODE, "")),
            cancelled=CANCELLED in files,
            terminated=Termination.parse(terminated) if terminated is not None else None,
            array=files.get(ARRAY) or None,
            elements={
                index: ElementMarkers(
                    own.get(STARTED),
                    _exit_code(own.get(EXIT_CODE, "")),
                    Termination.parse(own[TERMINATED]) if TERMINATED in own else None,
                    *parse_times(own.get(TIMES, "")),
                )
                for index, own in sorted(elements.items())
            },
            started_at=started_at,
            ended_at=ended_at,
        )
    return markers
