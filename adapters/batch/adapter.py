"""The flow shared by batch schedulers (Slurm, PBS) reached over SSH.

Submit, poll, cancel and read output of jobs kept in job directories
(`adapters.batch.jobdir`, read back by `adapters.batch.markers`); a subclass supplies
the pure command builders and output parsers of its scheduler
(`adapters.batch.scheduler`), and this class runs them over the pooled connection,
submissions sharing commands (`adapters.batch.submitting`).
"""

from __future__ import annotations

import asyncio
import functools
import posixpath
import time
from collections.abc import Mapping, Sequence

from adapters.base import (
    GATEWAY_ID_RE,
    Adapter,
    CenterLoad,
    JobRequest,
    NativeStatus,
    OutputChunk,
    OutputRequest,
)
from adapters.batch.jobdir import (
    ARRAY,
    JOB_DIR_FAILED,
    NATIVE_ID,
    JobDir,
    SpecRefused,
    batch_submit_command,
    batch_submit_input,
    element_file,
    job_files,
    parse_batch_output,
    read_chunk,
    render_user_script,
    resolve_path,
)
from adapters.batch.markers import (
    SEPARATOR,
    all_markers_command,
    markers_command,
    parse_markers,
)
from adapters.batch.scheduler import BatchScheduler, decoded
from adapters.batch.settle import needs_job_dir, settle, settle_array
from adapters.batch.submitting import Outcome, Prepared, SubmitQueue
from adapters.errors import (
    AdapterError,
    CenterUnavailable,
    CommandFailed,
    InvalidCall,
    SubmitRejected,
)
from adapters.transport.ssh import CommandResult, SSHConnection, SSHPool, SSHTarget


class JobDirAdapter(BatchScheduler, Adapter):
    """Submit, poll, cancel and read output of batch jobs kept in job directories."""

    #: Jobs one submission command carries, and how many such commands run at once.
    batch_size = 40
    batch_parallel = 6
    #: Commands under way beyond which a command is started only for a full batch: jobs
    #: that come one by one from many clients wait for one to end and share the next.
    eager_commands = 2

    def __init__(
        self,
        target: SSHTarget,
        pool: SSHPool,
        *,
        work_root: str = "~/.hpcfed",
        default_queue: str | None = None,
    ) -> None:
        self.center_id = target.center_id
        self.target = target
        self.work_root = work_root
        self.default_queue = default_queue
        self.remote_commands = 0
        self._pool = pool
        self._submissions = SubmitQueue(
            self.center_id,
            self._submit_chunk,
            batch_size=self.batch_size,
            # Leave sessions of the connection for the other calls meanwhile.
            parallel=min(self.batch_parallel, max(1, target.max_sessions - 2)),
            eager=self.eager_commands,
        )

    # ---------------------------------------------------- running
    @property
    def connection(self) -> SSHConnection:
        return self._pool.connection(self.target)

    async def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        self.remote_commands += 1
        return await self.connection.run(command, stdin=stdin)

    async def root(self) -> str:
        if self.work_root.startswith("/"):
            return posixpath.normpath(self.work_root)
        return resolve_path(self.work_root, await self.connection.home())

    def _failed(self, what: str, command: str, result: CommandResult) -> CommandFailed:
        return CommandFailed(
            f"center {self.center_id}: {what} failed (exit {result.exit_status}): "
            f"{decoded(result.stderr)[:500]}",
            command=command,
            exit_status=result.exit_status,
            stderr=decoded(result.stderr),
            center=self.center_id,
        )

    def _refused(self, exc: ValueError) -> SubmitRejected:
        """A job refused before anything was sent: SpecRefused names its field; another
        ValueError of the script's rendering (a value no directive line may carry) none."""
        return SubmitRejected(
            f"center {self.center_id}: {exc}",
            center=self.center_id,
            field=exc.field if isinstance(exc, SpecRefused) else None,
        )

    # ---------------------------------------------------- the Adapter contract
    async def submit(self, job: JobRequest) -> str:
        (outcome,) = await self.submit_many([job])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def submit_many(self, jobs: Sequence[JobRequest]) -> list[Outcome]:
        """Each job's directory is laid out and the job submitted by one script; up to
        `batch_size` jobs (of this call or of concurrent ones) share one remote command
        and `batch_parallel` such commands run at once over the pooled connection
        (`SubmitQueue`, which says what a command that fails as a whole leaves). A job
        this scheduler cannot be asked for is refused before the center is reached."""
        results: list[str | Exception | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            try:
                self.check_job(job)  # refused before the center is reached
            except SpecRefused as exc:
                results[i] = self._refused(exc)
        ready: list[Prepared] = []
        if any(r is None for r in results):
            home = await self.connection.home()
            root = await self.root()
        for i, job in enumerate(jobs):
            if results[i] is not None:
                continue
            jobdir = JobDir(root, job.gateway_id)
            try:
                job_script = self.render_job_script(job, jobdir, home)
            except ValueError as exc:  # SpecRefused, or a value no script may carry
                results[i] = self._refused(exc)
                continue
            # The array spec tells the final-state read which elements to expect.
            extra = {ARRAY: job.array + "\n"} if job.array is not None else {}
            files = job_files(job_script, render_user_script(job), extra)
            ready.append(Prepared(i, job, jobdir, files))
        for prepared, outcome in zip(ready, await self._submissions.submit(ready), strict=True):
            results[prepared.index] = outcome
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _submit_chunk(self, chunk: list[Prepared]) -> list[Outcome]:
        command = batch_submit_command(
            await self.root(), [p.jobdir for p in chunk], self.submit_tool
        )
        stdin = batch_submit_input([(p.jobdir, p.files) for p in chunk])
        try:
            result = await self.run(command, stdin=stdin)
        except AdapterError as exc:
            return [exc] * len(chunk)
        answers = parse_batch_output(result.stdout)
        return [
            self._submit_outcome(p.job, p.jobdir, answers.get(p.job.gateway_id), result)
            for p in chunk
        ]

    def _submit_outcome(
        self,
        job: JobRequest,
        jobdir: JobDir,
        answer: tuple[int, bytes, bytes] | None,
        whole: CommandResult,
    ) -> Outcome:
        command = self.submit_command(jobdir)  # what ran for this job, as messages show it
        if answer is None:
            return CenterUnavailable(
                f"center {self.center_id}: the submission (exit {whole.exit_status}) gave "
                f"no answer for this job; its outcome is unknown: {decoded(whole.stderr)[:300]}",
                center=self.center_id,
            )
        rc, stdout, stderr = answer
        if rc in JOB_DIR_FAILED:
            return CommandFailed(
                f"center {self.center_id}: could not write the job directory {jobdir.path}: "
                f"{decoded(stderr)[:500]}",
                command=command,
                exit_status=rc,
                stderr=decoded(stderr),
                center=self.center_id,
            )
        try:
            return self.parse_submit(CommandResult(rc, stdout, stderr), command, job)
        except AdapterError as exc:
            return exc

    async def status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        tracked = {
            nid: gid
            for nid, gid in jobs.items()
            if self._NATIVE_ID_RE.match(nid) and GATEWAY_ID_RE.match(gid)
        }
        if not tracked:
            return {}
        command, stdin = self.status_command(list(tracked)), None
        if self.reads_array_markers:
            marker_cmd, stdin = markers_command(await self.root(), list(tracked.values()), (ARRAY,))
            command = f'{{ {command} ; }} </dev/null; echo "{SEPARATOR} $?"; {marker_cmd}'
        result = await self.run(command, stdin)
        arrays: set[str] = set()
        if self.reads_array_markers:
            result, tail = _split_status(result)
            arrays = {gid for gid, m in parse_markers(tail).items() if m.array}
        # Parsing a listing of thousands of jobs takes milliseconds: in a worker thread,
        # so that requests are served meanwhile.
        statuses = await asyncio.to_thread(self.parse_status, result, list(tracked))
        array_ids = {
            nid
            for nid, gid in tracked.items()
            if gid in arrays
            or self.is_array_id(nid)
            or (nid in statuses and statuses[nid].elements)
        }
        unsettled = {
            nid: gid
            for nid, gid in tracked.items()
            if nid in array_ids or needs_job_dir(statuses.get(nid))
        }
        if unsettled:
            statuses.update(await self._final_states(unsettled, statuses, bool(array_ids)))
        return {nid: statuses[nid] for nid in tracked if nid in statuses}

    async def _final_states(
        self, jobs: Mapping[str, str], known: Mapping[str, NativeStatus], arrays: bool = True
    ) -> dict[str, NativeStatus]:
        """One command: the scheduler's history (where it keeps one), every marker file
        of the jobs, and (where the scheduler must be asked by id) the array elements
        those markers name. What the scheduler says is asked first: a job it reports
        ended has written its exit status already, so the markers read after agree."""
        marker_cmd, stdin = all_markers_command(await self.root(), list(jobs.values()))
        missing = [nid for nid in jobs if nid not in known]
        accounting = self.accounting_command(missing) if missing else None
        element_query = self.element_query_command() if arrays else None
        parts = []
        if accounting is not None:
            parts.append(f"{{ {accounting} ; }} </dev/null; echo {SEPARATOR}")
        if element_query is not None:
            # The markers twice: for the element ids to ask about, then to settle by.
            markers_of_input = f"printf '%s\\n' \"$hpcfed_in\" | {{ {marker_cmd}; }}"
            parts.append(
                f"hpcfed_in=$(cat); hpcfed_m=$({markers_of_input}); "
                f"printf '%s\\n' \"$hpcfed_m\" | {element_query}; {markers_of_input}"
            )
        else:
            parts.append(marker_cmd)
        result = await self.run("; ".join(parts), stdin)
        out = decoded(result.stdout)
        history: dict[str, NativeStatus] = {}
        if accounting is not None:
            head, _, out = out.partition(SEPARATOR + "\n")
            history = self.parse_accounting(head, decoded(result.stderr), missing)
        queried: dict[str, NativeStatus] = {}
        if element_query is not None:
            head, _, rest = out.partition(SEPARATOR + " ")
            status, _, out = rest.partition("\n")
            queried = self.parse_element_query(head, int(status) if status.isdigit() else 255)
        markers = parse_markers(out)
        settled = {}
        for nid, gid in jobs.items():
            m, seen = markers.get(gid), known.get(nid) or history.get(nid)
            is_array = m is not None and (m.array is not None or bool(m.elements))
            if is_array or (seen and seen.elements) or self.is_array_id(nid):
                listed = self.queried_elements(m, queried) if m and queried else []
                settled[nid] = settle_array(
                    nid,
                    seen,
                    m,
                    functools.partial(self.element_native_id, nid),
                    lists_pending=self.lists_pending_elements,
                    listed=listed,
                )
            else:
                settled[nid] = settle(nid, seen, m)
        return settled

    async def find_by_gateway_id(self, gateway_ids: Sequence[str]) -> dict[str, str]:
        gids = [g for g in gateway_ids if GATEWAY_ID_RE.match(g)]
        if not gids:
            return {}
        command, stdin = markers_command(await self.root(), gids, (NATIVE_ID,))
        listing = self.listing_command()
        if listing is not None:
            command = f"{listing} </dev/null; echo {SEPARATOR}; {command}"
        out = decoded((await self.run(command, stdin)).stdout)
        found: dict[str, str] = {}
        if listing is not None:
            head, _, out = out.partition(SEPARATOR + "\n")
            found.update({g: n for g, n in self.parse_listing(head).items() if g in gids})
        for gid, markers in parse_markers(out).items():
            if markers.native_id and gid in gids and self._NATIVE_ID_RE.match(markers.native_id):
                found[gid] = markers.native_id
        return found

    async def cancel(self, native_id: str, gateway_id: str) -> None:
        if not self._NATIVE_ID_RE.match(native_id):
            raise InvalidCall(
                f"not a {self.scheduler} job id: {native_id!r}", center=self.center_id
            )
        command = self.cancel_command(native_id, JobDir(await self.root(), gateway_id))
        result = await self.run(command)
        if result.exit_status != 0 and not self.already_gone(result):
            raise self._failed("cancel", command, result)

    async def output_chunk(self, request: OutputRequest) -> OutputChunk:
        # An array job has no plain `stdout`: element=None finds nothing, as it should.
        path = JobDir(await self.root(), request.gateway_id).file(
            element_file(request.stream, request.element)
        )
        offset, limit = request.offset, request.limit
        return await self.connection.sftp(lambda s: read_chunk(s, path, offset, limit))

    async def job_workdir(self, gateway_id: str, working_dir: str | None) -> str:
        if working_dir:
            home = await self.connection.home()
            try:
                return resolve_path(working_dir, home)
            except ValueError as exc:  # '~user': the gateway refuses it first
                raise InvalidCall(f"working_dir: {exc}", center=self.center_id) from None
        return JobDir(await self.root(), gateway_id).path

    async def load(self) -> CenterLoad:
        command = self.load_command()
        if command is None:
            raise AdapterError(
                f"center {self.center_id} does not report its load", center=self.center_id
            )
        queried_at = time.time()
        result = await self.run(command)
        if result.exit_status != 0:  # never read a failing scheduler as an empty center
            raise self._failed("load query", command, result)
        return self.parse_load(result, queried_at)

    async def close(self) -> None:
        """The pool belongs to whoever made it; nothing of our own to release."""


def _split_status(result: CommandResult) -> tuple[CommandResult, str]:
    """`{ status; } ...; echo "SEPARATOR $?"; more`: the status command's own result
    (its exit status from the separator line), and what followed."""
    head, sep, rest = decoded(result.stdout).partition(SEPARATOR + " ")
    if not sep:  # the shell did not get that far
        return result, ""
    status, _, tail = rest.partition("\n")
    code = int(status) if status.strip().isdigit() else result.exit_status
    return CommandResult(code, head.encode(), result.stderr), tail


def ping_failed(center_id: str, command: str, result: CommandResult) -> CommandFailed:
    """A scheduler ping that failed, with what it said (Slurm's on stdout, PBS's on stderr)."""
    said = " ".join(decoded(result.stdout + result.stderr).split())[:300] or "no output"
    return CommandFailed(
        f"center {center_id}: '{command}' failed (exit {result.exit_status}): {said}",
        command=command,
        exit_status=result.exit_status,
        stderr=decoded(result.stderr),
        center=center_id,
    )
