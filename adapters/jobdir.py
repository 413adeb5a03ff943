"""The per-job directory at a center, shared by the batch-scheduler adapters.

Every job gets `<work_root>/jobs/<gateway_id>/` holding `job.sh` (the batch
script), `script` (the user's script), `stdout`, `stderr`, `exit_code`,
`native_id` and, once cancelled through us, `cancelled`. The directory is what
lets the gateway learn a job's true end after the scheduler has forgotten it
(no accounting database, or a purged history) and reconcile a submission whose
reply was lost. `adapters.batch.JobDirAdapter` runs the flow both schedulers
share; this module holds the layout, the rendering and the parsing.
"""

from __future__ import annotations

import posixpath
import re
import shlex
import stat
from collections.abc import Sequence
from dataclasses import dataclass, replace

import paramiko

from adapters.base import (
    GATEWAY_ID_RE,
    JobRequest,
    JobState,
    NativeStatus,
    OutputChunk,
)

JOB_SCRIPT = "job.sh"
USER_SCRIPT = "script"
STDOUT = "stdout"
STDERR = "stderr"
EXIT_CODE = "exit_code"
NATIVE_ID = "native_id"
CANCELLED = "cancelled"
_MARKERS = (NATIVE_ID, EXIT_CODE, CANCELLED)
LEFT_QUEUE = "LEFT_QUEUE"  # native_state of a job known only from its directory
SEPARATOR = "--hpcfed-markers--"  # between scheduler history and marker files in one output


def quote(value: str) -> str:
    """The one place a value is quoted for a remote shell."""
    return shlex.quote(value)


def directive(head: str, value: str) -> str:
    """A directive line such as `#SBATCH --time=` + value; a value that could end
    its line (and start a directive or command of its own) is refused."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise ValueError(f"{head.strip()} value contains a control character: {value!r}")
    return head + quote(value)


def resolve_path(path: str, home: str) -> str:
    """'~' and '~/x' are under the login's home, and so are relative paths."""
    if path == "~":
        return home
    if path.startswith("~/"):
        path = path[2:]
    elif path.startswith("~"):
        raise ValueError(f"path {path!r}: only '~/' is understood, not '~user'")
    return posixpath.normpath(posixpath.join(home, path))


@dataclass(frozen=True)
class JobDir:
    root: str  # absolute work root
    gateway_id: str

    def __post_init__(self) -> None:
        if not GATEWAY_ID_RE.match(self.gateway_id):  # it becomes a path component
            raise ValueError(f"not a gateway id: {self.gateway_id!r}")

    @property
    def jobs(self) -> str:
        return posixpath.join(self.root, "jobs")

    @property
    def path(self) -> str:
        return posixpath.join(self.jobs, self.gateway_id)

    def file(self, name: str) -> str:
        return posixpath.join(self.path, name)


def render_user_script(job: JobRequest) -> str:
    """The user's script as given (with a shebang), or one that runs command+arguments."""
    if job.script is not None:
        text = job.script if job.script.startswith("#!") else "#!/bin/bash\n" + job.script
        return text if text.endswith("\n") else text + "\n"
    assert job.command is not None
    argv = " ".join(quote(word) for word in (job.command, *job.arguments))
    return f"#!/bin/bash\nexec {argv}\n"


def render_body(job: JobRequest, jobdir: JobDir, home: str, launcher: Sequence[str] = ()) -> str:
    """The scheduler-independent part of job.sh: environment, cd, run, record the exit code.

    `launcher` is a command the user script runs under (e.g. `timeout` where no
    scheduler enforces the walltime).
    """
    lines = [f"export {name}={quote(value)}" for name, value in job.environment.items()]
    lines.append(f"export HPCFED_JOB_ID={quote(job.gateway_id)}")
    workdir = resolve_path(job.working_dir, home) if job.working_dir else jobdir.path
    tmp = jobdir.file(EXIT_CODE + ".tmp")
    run = " ".join(quote(word) for word in (*launcher, jobdir.file(USER_SCRIPT)))
    lines += [
        # A child process, so the script's own `exit` cannot skip the bookkeeping below.
        f"cd {quote(workdir)} && {run}",
        "code=$?",
        # Renamed into place so a reader never sees a half-written file.
        f"printf '%s\\n' \"$code\" > {quote(tmp)} && mv -f {quote(tmp)} "
        f"{quote(jobdir.file(EXIT_CODE))}",
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


def submit_command(jobdir: JobDir, submit: str) -> str:
    """Submit job.sh from the job dir. The id lands in `native_id` (so a lost reply
    is reconciled from it) and is printed too; the scheduler's exit status is kept."""
    return (
        f"cd {quote(jobdir.path)} && {{ {submit} {JOB_SCRIPT} > {NATIVE_ID}; rc=$?; "
        f'cat {NATIVE_ID}; exit "$rc"; }}'
    )


# ------------------------------------------------------------ markers read back


@dataclass(frozen=True)
class JobMarkers:
    native_id: str | None = None
    exit_code: int | None = None
    cancelled: bool = False


def markers_command(
    root: str, gateway_ids: Sequence[str], names: Sequence[str] = _MARKERS
) -> tuple[str, bytes]:
    """One command printing `<gateway_id>/<file>:<line>` for each marker file that exists.

    The file list travels on stdin, so the command line stays short however
    many jobs are asked about.
    """
    listing = "".join(f"{gid}/{name}\n" for gid in gateway_ids for name in names)
    command = f"cd {quote(posixpath.join(root, 'jobs'))} && xargs grep -s -H '' --"
    return command, listing.encode()


def cancelled_marker_command(jobdir: JobDir) -> str:
    """Leaves the `cancelled` marker; a missing job directory is not an error."""
    return f"{{ printf 'cancelled\\n' > {quote(jobdir.file(CANCELLED))}; }} 2>/dev/null || true"


def parse_markers(text: str) -> dict[str, JobMarkers]:
    found: dict[str, dict[str, str]] = {}
    for line in text.splitlines():
        path, sep, content = line.partition(":")
        gid, _, name = path.partition("/")
        if sep and GATEWAY_ID_RE.match(gid) and name in _MARKERS:
            found.setdefault(gid, {}).setdefault(name, content.strip())  # first line wins
    markers = {}
    for gid, files in found.items():
        code = files.get(EXIT_CODE, "")
        markers[gid] = JobMarkers(
            native_id=files.get(NATIVE_ID, "").split(";")[0] or None,  # sbatch: "id;cluster"
            exit_code=int(code) if re.fullmatch(r"-?\d{1,9}", code) else None,
            cancelled=CANCELLED in files,
        )
    return markers


def status_from_markers(native_id: str, markers: JobMarkers | None) -> NativeStatus:
    """A job's final state as its directory tells it."""
    m = markers or JobMarkers()
    if m.native_id is not None and m.native_id != native_id:
        m = JobMarkers(cancelled=m.cancelled)  # the files belong to another submission
    if m.exit_code is not None:
        if m.cancelled and m.exit_code != 0:
            state, reason = JobState.CANCELLED, "cancelled; exit status from the job directory"
        else:
            state = JobState.COMPLETED if m.exit_code == 0 else JobState.FAILED
            reason = "exit status from the job directory"
        return NativeStatus(native_id, state, LEFT_QUEUE, reason, m.exit_code)
    if m.cancelled:
        return NativeStatus(native_id, JobState.CANCELLED, LEFT_QUEUE, "cancelled", None)
    return NativeStatus(
        native_id,
        JobState.FAILED,
        LEFT_QUEUE,
        "the job left the queue without an exit status (killed, timed out or lost)",
        None,
    )


def needs_job_dir(status: NativeStatus | None) -> bool:
    """Whether the job directory must complete what the scheduler said."""
    if status is None:  # gone from the scheduler
        return True
    if status.state is JobState.COMPLETED:
        return status.exit_code is None  # "finished", but not how (Torque's C)
    if status.state is JobState.FAILED:  # killed by a signal: perhaps by our own cancel
        return status.exit_code is None or status.exit_code > 128
    # UNKNOWN: perhaps an end the scheduler's front end has no letter for.
    return status.state is JobState.UNKNOWN


def settle(native_id: str, seen: NativeStatus | None, markers: JobMarkers | None) -> NativeStatus:
    """Combine what the scheduler reports with what the job directory holds."""
    from_dir = status_from_markers(native_id, markers)
    if seen is None:
        return from_dir
    if seen.state is JobState.COMPLETED and seen.exit_code is None:
        return replace(from_dir, native_state=seen.native_state)
    ended = from_dir.exit_code is not None or from_dir.state is JobState.CANCELLED
    if seen.state is JobState.UNKNOWN and ended:
        return replace(from_dir, native_state=seen.native_state)
    if seen.state is JobState.FAILED and from_dir.state is JobState.CANCELLED:
        code = seen.exit_code if seen.exit_code is not None else from_dir.exit_code
        return replace(seen, state=JobState.CANCELLED, reason="cancelled", exit_code=code)
    if seen.exit_code is None and from_dir.exit_code is not None:
        return replace(seen, exit_code=from_dir.exit_code)
    return seen


# ------------------------------------------------------------ SFTP work (worker thread)


def _makedirs(sftp: paramiko.SFTPClient, path: str) -> None:
    parts = path.strip("/").split("/")
    current = ""
    for part in parts:
        current += "/" + part
        try:
            sftp.stat(current)
        except FileNotFoundError:
            sftp.mkdir(current, 0o700)


def _read_small(sftp: paramiko.SFTPClient, path: str) -> str:
    try:
        with sftp.open(path, "r") as f:
            return f.read(4096).decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def write_job_files(
    sftp: paramiko.SFTPClient, jobdir: JobDir, job_script: str, user_script: str
) -> str | None:
    """Lay out the job directory; return the native id if this job was already submitted."""
    _makedirs(sftp, jobdir.path)
    existing = _read_small(sftp, jobdir.file(NATIVE_ID))
    if existing:
        return existing.splitlines()[0].split(";")[0]
    for name in (EXIT_CODE, CANCELLED, STDOUT, STDERR):  # left by an attempt that never ran
        try:
            sftp.remove(jobdir.file(name))
        except FileNotFoundError:
            pass
    for name, text, mode in ((JOB_SCRIPT, job_script, 0o700), (USER_SCRIPT, user_script, 0o700)):
        with sftp.open(jobdir.file(name), "w") as f:
            f.write(text.encode())
        sftp.chmod(jobdir.file(name), mode)
    return None


def read_chunk(sftp: paramiko.SFTPClient, path: str, offset: int, limit: int) -> OutputChunk:
    try:
        attrs = sftp.stat(path)
    except FileNotFoundError:
        return OutputChunk(b"", offset, None, exists=False)
    size = attrs.st_size or 0
    if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
        return OutputChunk(b"", offset, None, exists=False)
    want = max(0, min(limit, size - offset))
    if want == 0:
        return OutputChunk(b"", offset, size)
    with sftp.open(path, "r") as f:
        data = b"".join(f.readv([(offset, want)]))  # pipelined reads, not one round trip per 32 KiB
    return OutputChunk(data, offset, size)
