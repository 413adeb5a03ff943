"""The per-job directory at a center, shared by the batch-scheduler adapters.

Every job gets `<work_root>/jobs/<gateway_id>/` holding `job.sh` (the batch
script), `script` (the user's script), `stdout`, `stderr`, `exit_code`,
`native_id` and, once cancelled through us, `cancelled`. A job the scheduler
sent SIGTERM (its walltime ran out, or it was cancelled or preempted) leaves
`terminated`. An array job also holds `array` (its index spec, written at
submit) and, per element i, `stdout.i`, `stderr.i`, `exit_code.i`,
`terminated.i`, `started.i` (the element's own scheduler id) and `times.i`.
`times` holds "<start>" while the job runs and "<start> <end>" once its script
returned (or the scheduler's SIGTERM came): epoch seconds by the job's own
clock, what usage and billing are computed from.

The directory is what lets the gateway learn a job's true end after the
scheduler has forgotten it (no accounting database, or a purged history) and
reconcile a submission whose reply was lost. `adapters.batch.adapter.JobDirAdapter`
runs the flow both schedulers share; this module holds the layout, the
rendering and the file transfers, `adapters.batch.markers` reads the files back.
"""

from __future__ import annotations

import io
import posixpath
import re
import stat
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import paramiko

from adapters.base import (
    DEPENDENCY_CONDITIONS,
    DIRECTIVE_RE,
    GATEWAY_ID_RE,
    JobRequest,
    OutputChunk,
)
from adapters.transport.framing import quote

JOB_SCRIPT = "job.sh"
USER_SCRIPT = "script"
STDOUT = "stdout"
STDERR = "stderr"
EXIT_CODE = "exit_code"
NATIVE_ID = "native_id"
#: Held while a submission runs, so two attempts never both reach the scheduler.
SUBMIT_LOCK = "submit.lock"
CANCELLED = "cancelled"
TERMINATED = "terminated"
ARRAY = "array"
STARTED = "started"
TIMES = "times"
#: Where an array element learns its index, in order; the last one lets a center
#: without a scheduler (or a test) run an element by hand.
INDEX_VARIABLES = ("SLURM_ARRAY_TASK_ID", "PBS_ARRAYID", "PBS_ARRAY_INDEX", "HPCFED_ARRAY_INDEX")
#: Where an element learns its own scheduler id (Torque and PBS Pro, then Slurm).
JOB_ID_VARIABLES = ("PBS_JOBID", "SLURM_JOB_ID")
_INDEX = '"$HPCFED_ARRAY_INDEX"'  # the element's index in job.sh, validated digits
#: Now, in job.sh: bash 5's EPOCHREALTIME (microseconds; its decimal point is the
#: locale's), else `date +%s` (bash 4 has no EPOCHREALTIME).
_NOW = "${EPOCHREALTIME:-$(date +%s)}"


class SpecRefused(ValueError):
    """A job this center's scheduler cannot be asked for as specified; `field`
    names the job spec field. Raised before anything is sent to the center."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


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
    # `--`: a command that starts with `-` is a program of that name, not an option
    # of exec.
    return f"#!/bin/bash\nexec -- {argv}\n"


def array_indices(spec: str, limit: int | None = None) -> list[int]:
    """The indices an array spec ("0-3", "1,3,5-7", "0-15:2", "...%N") names, in order,
    without repeats. With `limit`, a spec naming more is refused before it is expanded."""
    seen: dict[int, None] = {}
    for part in spec.split("%", 1)[0].split(","):
        bounds, _, step_text = part.partition(":")
        first, _, last = bounds.partition("-")
        start, stop, step = int(first), int(last or first), int(step_text or 1)
        if stop < start or step < 1:
            raise ValueError(f"array range {part!r} names no index")
        if limit is not None and len(seen) + (stop - start) // step + 1 > limit:
            raise ValueError(f"more than {limit} elements")
        seen.update(dict.fromkeys(range(start, stop + 1, step)))
    return list(seen)


def element_file(name: str, index: int | None) -> str:
    """`stdout` of a plain job, `stdout.<index>` of an array element."""
    return name if index is None else f"{name}.{index}"


def _path(jobdir: JobDir, name: str, array: bool, suffix: str = "") -> str:
    """A job dir file as job.sh names it: quoted once, the element's index appended."""
    return quote(jobdir.file(name)) + (f".{_INDEX}" if array else "") + suffix


def _write_marker(jobdir: JobDir, name: str, array: bool, value: str) -> str:
    """Write `value` and rename it into place, so a reader never sees a half-written file."""
    tmp, final = _path(jobdir, name, array, ".tmp"), _path(jobdir, name, array)
    return f"printf '%s\\n' {value} > {tmp} && mv -f {tmp} {final}"


def _fallbacks(names: Sequence[str]) -> str:
    """`${A:-${B:-}}`: the first of the variables that is set and not empty."""
    text = ""
    for name in reversed(names):
        text = f"${{{name}:-{text}}}"
    return text


def render_body(
    job: JobRequest,
    jobdir: JobDir,
    home: str,
    launcher: Sequence[str] = (),
    *,
    redirect_output: bool = False,
) -> str:
    """The scheduler-independent part of job.sh: environment, element index, output,
    run, and the markers that tell how the job ended.

    `launcher` is a command the user script runs under (e.g. `timeout` where no
    scheduler enforces the walltime). `redirect_output` sends the job's output to
    the job dir from inside, for front ends that ignore output directives.
    """
    array = job.array is not None
    lines = [f"export {name}={quote(value)}" for name, value in job.environment.items()]
    lines.append(f"export HPCFED_JOB_ID={quote(job.gateway_id)}")
    lines.append(f"hpcfed_start={_NOW}")  # after the user's exports, which cannot reset it
    if array:
        # After the user's exports, so the files below cannot be renamed by them.
        lines += [
            f"HPCFED_ARRAY_INDEX={_fallbacks(INDEX_VARIABLES)}",
            'case "$HPCFED_ARRAY_INDEX" in ""|*[!0-9]*)',
            '  echo "hpcfed: no array index from the scheduler" >&2; exit 1;;',
            "esac",
            "export HPCFED_ARRAY_INDEX",
        ]
    if redirect_output:
        out, err = _path(jobdir, STDOUT, array), _path(jobdir, STDERR, array)
        lines.append(f"exec >>{out} 2>>{err}")
    limit = str(job.walltime_seconds) if job.walltime_seconds else "-"
    terminated = _write_marker(jobdir, TERMINATED, array, '"$SECONDS ' + limit + '"')
    ended = _write_marker(jobdir, TIMES, array, f'"$hpcfed_start {_NOW}"')
    lines += [
        f"hpcfed_ended() {{ {ended}; }}",
        # Schedulers send SIGTERM at the walltime (and on cancel or preemption), then
        # SIGKILL. bash runs the trap once the user script (which got the signal too)
        # has ended; the marker says how long the job had run, and of what limit. The
        # end is written here too, in case the SIGKILL comes before the lines below.
        # A SIGTERM before the user script started (a cancel right after the start)
        # runs the trap at once, and bash would go on: the flag keeps the user script
        # from starting, as if the signal had ended it (128 + 15).
        "hpcfed_term=0",
        f"hpcfed_terminated() {{ hpcfed_ended; {terminated}; hpcfed_term=1; }}",
        "trap hpcfed_terminated TERM",
        _write_marker(jobdir, TIMES, array, '"$hpcfed_start"'),
    ]
    if array:
        lines.append(_write_marker(jobdir, STARTED, array, f'"{_fallbacks(JOB_ID_VARIABLES)}"'))
    workdir = resolve_path(job.working_dir, home) if job.working_dir else jobdir.path
    run = " ".join(quote(word) for word in (*launcher, jobdir.file(USER_SCRIPT)))
    lines += [
        # A child process, so the script's own `exit` cannot skip the bookkeeping below.
        f'cd {quote(workdir)} && if [ "$hpcfed_term" = 0 ]; then {run}; else (exit 143); fi',
        "code=$?",
        "hpcfed_ended",  # before the exit status: whoever reads that finds the end too
        _write_marker(jobdir, EXIT_CODE, array, '"$code"'),
        'exit "$code"',
    ]
    return "\n".join(lines) + "\n"


#: Left by an attempt that never ran (an array's elements never started either).
LEFTOVERS = (EXIT_CODE, CANCELLED, TERMINATED, TIMES, STDOUT, STDERR)
#: The exit statuses of a submission that could not make or write its job dir.
JOB_DIR_FAILED = (73, 74)


@dataclass(frozen=True)
class JobFile:
    """A file of the job directory, written before the job is submitted."""

    name: str
    text: str
    mode: int


def job_files(
    job_script: str, user_script: str, extra: Mapping[str, str] | None = None
) -> list[JobFile]:
    files = [JobFile(JOB_SCRIPT, job_script, 0o700), JobFile(USER_SCRIPT, user_script, 0o700)]
    return files + [JobFile(name, text, 0o600) for name, text in (extra or {}).items()]


def submit_command(jobdir: JobDir, submit: str) -> str:
    """What a job's submission runs, as messages show it (see `batch_submit_command`)."""
    return f"cd {quote(jobdir.path)} && {submit} {JOB_SCRIPT}"


def batch_submit_command(root: str, jobdirs: Sequence[JobDir], submit: str) -> str:
    """One remote command that lays out and submits several jobs. Its stdin is
    `batch_submit_input` (a tar of the job files); its stdout a tar of `out/<gateway
    id>.rc`, `.o` and `.e` per job (the submit tool's exit status and output), read
    by `parse_batch_output`. The command line carries paths and ids only; the
    scripts travel on stdin.

    Each job's id lands in `native_id` in its job dir, so a lost reply is reconciled
    from it. A refusal leaves no `native_id` (some front ends print their errors on
    stdout). Attempts for one job dir are serialized by a lock on it, and one that
    finds `native_id` set prints it and neither writes nor submits anything (the job
    may be running): a scheduler call orphaned by a gateway that died (it may still
    be waiting on a busy scheduler when the gateway, restarted, tries again) can
    never make a second job.

    Few processes start per job (the lock, one `mv` of its files, the scheduler), so
    the center's time goes to its scheduler."""
    leftovers = " ".join(LEFTOVERS)
    per_job = (
        'cd "$2" || exit 73; '
        f'if [ -n "$lock" ]; then exec 9>>{SUBMIT_LOCK}; '
        f"flock -w 300 9 || {{ echo 'hpcfed: job dir locked' >&2; exit 75; }}; fi; "
        f"if [ -s {NATIVE_ID} ]; then cat {NATIVE_ID}; exit 0; fi; "
        # Left by an attempt that never ran; tested first, so nothing starts for none.
        f'for f in {leftovers}; do if [ -e "$f" ]; then rm -f "$f" || exit 74; fi; done; '
        'mv -f "$t/in/$1/"* . || exit 74; '
        f"{submit} {JOB_SCRIPT}; rc=$?; "
        f'if [ "$rc" -eq 0 ] && read -r id <"$t/out/$1.o"; then '
        f"printf '%s\\n' \"$id\" >{NATIVE_ID}; fi; "
        'exit "$rc"'
    )
    dirs = " ".join(quote(d.path) for d in jobdirs)
    lines = [
        "umask 077",
        f"mkdir -p {quote(root)} && t=$(mktemp -d {quote(root)}/.submit.XXXXXX) || exit 73",
        "trap 'rm -rf \"$t\"' EXIT",
        'cd "$t" && mkdir out && tar -xf - || exit 74',
        f"mkdir -p {dirs} 2>/dev/null",
        "if command -v flock >/dev/null 2>&1; then lock=1; else lock=; fi",
        "one() {",
        f'  ( {per_job} ) </dev/null >"$t/out/$1.o" 2>"$t/out/$1.e"',
        '  echo "$?" >"$t/out/$1.rc"',
        "}",
    ]
    lines += [f"one {d.gateway_id} {quote(d.path)}" for d in jobdirs]
    lines.append('cd "$t" && tar -cf - out')
    return "\n".join(lines) + "\n"


def batch_submit_input(jobs: Sequence[tuple[JobDir, Sequence[JobFile]]]) -> bytes:
    """The tar `batch_submit_command` reads: `in/<gateway id>/<file>` with its mode."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for jobdir, files in jobs:
            for f in files:
                data = f.text.encode()
                info = tarfile.TarInfo(f"in/{jobdir.gateway_id}/{f.name}")
                info.size, info.mode, info.mtime = len(data), f.mode, now
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def parse_batch_output(stdout: bytes) -> dict[str, tuple[int, bytes, bytes]]:
    """`batch_submit_command`'s stdout -> {gateway id: (exit status, stdout, stderr)}.
    Read in memory, never extracted. A cut or garbled archive gives {}: every job's
    outcome is then unknown."""
    try:
        with tarfile.open(fileobj=io.BytesIO(stdout), mode="r:") as tar:
            files: dict[str, bytes] = {}
            for member in tar.getmembers():
                body = tar.extractfile(member) if member.isfile() else None
                if body is not None:
                    files[member.name] = body.read()
    except (tarfile.TarError, EOFError, OSError):
        return {}
    out: dict[str, tuple[int, bytes, bytes]] = {}
    for name, data in files.items():
        gateway_id = name.removeprefix("out/").removesuffix(".rc")
        if name == f"out/{gateway_id}.rc" and GATEWAY_ID_RE.match(gateway_id):
            try:
                rc = int(data.strip())
            except ValueError:
                continue
            o, e = files.get(f"out/{gateway_id}.o", b""), files.get(f"out/{gateway_id}.e", b"")
            out[gateway_id] = (rc, o, e)
    return out


def check_request(job: JobRequest, native_id_re: re.Pattern[str], scheduler: str) -> None:
    """What every scheduler refuses alike: malformed dependencies and extra directives."""
    for i, (condition, parent) in enumerate(job.dependencies):
        if condition not in DEPENDENCY_CONDITIONS:
            raise SpecRefused(
                f"dependencies[{i}].condition",
                f"dependency condition {condition!r} is not one of {DEPENDENCY_CONDITIONS}",
            )
        if not native_id_re.match(parent):
            raise SpecRefused(f"dependencies[{i}].job", f"{parent!r} is not a {scheduler} job id")
    for i, arg in enumerate(job.extra_directives):
        if not DIRECTIVE_RE.match(arg):
            raise SpecRefused(
                f"extra_directives.{scheduler}[{i}]",
                f"extra directive {arg!r} must be '-x value' or '--name=value' without quotes "
                "or shell metacharacters",
            )


def reserved_directive(arg: str, options: Sequence[str]) -> bool:
    """Whether a directive argument sets one of `options` ("-o", "--output", "-W depend")
    in any spelling schedulers accept: "-o x", "-ox", "--output=x", "--output x"."""
    if arg.startswith("--"):
        flag = arg.split(None, 1)[0].split("=", 1)[0]
        return flag in options
    packed = arg.replace(" ", "", 1)  # "-W depend=1" -> "-Wdepend=1", "-t 1-3" -> "-t1-3"
    return any(packed.startswith(o.replace(" ", "")) for o in options if not o.startswith("--"))


def grouped_dependencies(dependencies: Sequence[tuple[str, str]]) -> str | None:
    """[("afterok", "1"), ("afterok", "2"), ("afterany", "3")] -> "afterok:1:2,afterany:3",
    the syntax Slurm, Torque and PBS Pro share."""
    by_condition: dict[str, list[str]] = {}
    for condition, parent in dependencies:
        by_condition.setdefault(condition, []).append(parent)
    return ",".join(":".join((c, *ids)) for c, ids in by_condition.items()) or None


def cancelled_marker_command(jobdir: JobDir) -> str:
    """Leaves the `cancelled` marker; a missing job directory is not an error."""
    return f"{{ printf 'cancelled\\n' > {quote(jobdir.file(CANCELLED))}; }} 2>/dev/null || true"


# ------------------------------------------------------------ SFTP work (worker thread)


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
