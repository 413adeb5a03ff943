"""The flow shared by batch schedulers (Slurm, PBS) reached over SSH.

Submit, poll, cancel and read output of jobs kept in job directories
(`adapters.batch.adapter.jobdir`); a subclass supplies pure command builders and output
parsers for its scheduler, and this class runs them over the pooled connection.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import functools
import posixpath
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from adapters.base import (
    GATEWAY_ID_RE,
    Adapter,
    ArrayElement,
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
    JobFile,
    SpecRefused,
    batch_submit_command,
    batch_submit_input,
    check_request,
    element_file,
    job_files,
    parse_batch_output,
    read_chunk,
    render_user_script,
    resolve_path,
    submit_command,
)
from adapters.batch.markers import (
    SEPARATOR,
    JobMarkers,
    all_markers_command,
    markers_command,
    needs_job_dir,
    parse_markers,
    settle,
    settle_array,
)
from adapters.errors import (
    AdapterError,
    CenterUnavailable,
    CommandFailed,
    InvalidCall,
    SubmitRejected,
)
from adapters.transport.ssh import CommandResult, SSHConnection, SSHPool, SSHTarget


@dataclass(frozen=True)
class _Prepared:
    """A job of a `submit_many` call, ready to send."""

    index: int  # in the call's list
    job: JobRequest
    jobdir: JobDir
    files: list[JobFile]


class JobDirAdapter(Adapter):
    """Submit, poll, cancel and read output of batch jobs kept in job directories."""

    scheduler = "batch"  # the submit command, for messages
    family = "batch"  # the key of the spec's extra_directives for this kind of center
    _NATIVE_ID_RE = re.compile(r"^[0-9A-Za-z._\[\]-]{1,128}$")
    #: The status command lists every element of an array not yet ended, pending
    #: ones included, so an element it does not list has left the queue.
    lists_pending_elements = True
    #: The status command cannot tell an array job from others: it also reads each
    #: tracked job's `array` marker (in the same remote command).
    reads_array_markers = False
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
        # Prepared jobs waiting for a submission command, and the commands under way.
        self._queue: collections.deque[tuple[_Prepared, asyncio.Future[str | Exception]]] = (
            collections.deque()
        )
        self._sending = 0
        self._senders: set[asyncio.Task[None]] = set()
        self._pool = pool

    # ---------------------------------------------------- subclass hooks (pure)
    def check_job(self, job: JobRequest) -> None:
        """Refuse (SpecRefused) what this scheduler cannot be asked for, before any contact."""
        check_request(job, self._NATIVE_ID_RE, self.family)

    @abc.abstractmethod
    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str: ...

    #: The scheduler's submit command, given the job script's name (`sbatch --parsable`).
    submit_tool = ""

    def submit_command(self, jobdir: JobDir) -> str:
        """Submit a laid-out job dir (what a submission runs for each job, as messages
        show it)."""
        return submit_command(jobdir, self.submit_tool)

    @abc.abstractmethod
    def rejection(self, result: CommandResult, job: JobRequest) -> tuple[str, str | None]:
        """A refused submission: the scheduler's message, and the spec field it names."""

    @abc.abstractmethod
    def status_command(self, native_ids: Sequence[str]) -> str: ...

    @abc.abstractmethod
    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]: ...

    @abc.abstractmethod
    def cancel_command(self, native_id: str, jobdir: JobDir) -> str: ...

    @abc.abstractmethod
    def element_native_id(self, array_id: str, index: int, started: str | None) -> str:
        """An element's id where the scheduler did not list it; `started` is the id
        the element recorded when it started, if it did."""

    def is_array_id(self, native_id: str) -> bool:
        """Whether the id alone says the job is an array."""
        return False

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        """A command learning final states from the scheduler's history, if any."""
        return None

    def parse_accounting(
        self, text: str, stderr: str, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        """`accounting_command(native_ids)`'s output: native id -> what the scheduler's
        history (or a query of those jobs alone) says of it."""
        return {}

    def element_query_command(self) -> str | None:
        """A filter reading marker lines on stdin and printing the scheduler's status of
        the element ids they record, then always a `SEPARATOR <exit status>` line; for
        schedulers whose status command does not list array elements."""
        return None

    def parse_element_query(self, text: str, exit_status: int) -> dict[str, NativeStatus]:
        """`element_query_command`'s output and exit status: element id -> status."""
        return {}

    def queried_elements(
        self, markers: JobMarkers, queried: Mapping[str, NativeStatus]
    ) -> list[ArrayElement]:
        """The elements of one array among the queried ones, by the ids they recorded."""
        return []

    def listing_command(self) -> str | None:
        """A command listing jobs with the gateway ids they carry, if the scheduler keeps them."""
        return None

    def parse_listing(self, text: str) -> dict[str, str]:
        """gateway id -> native id from `listing_command`'s output."""
        return {}

    def load_command(self) -> str | None:
        """One command telling the center's partitions, nodes and queue, if the scheduler can."""
        return None

    def parse_load(self, result: CommandResult, queried_at: float) -> CenterLoad:
        """`load_command`'s (successful) result -> the center's load."""
        raise NotImplementedError

    def parse_submit(self, result: CommandResult, command: str, job: JobRequest) -> str:
        if result.exit_status != 0:
            said, field = self.rejection(result, job)
            raise SubmitRejected(
                f"center {self.center_id}: {self.scheduler} refused the job "
                f"(exit {result.exit_status}): {said[:500]}",
                command=command,
                exit_status=result.exit_status,
                stderr=said,
                center=self.center_id,
                field=field,
            )
        native_id = _text(result.stdout).split(";")[0].strip()  # sbatch: "id[;cluster]"
        if not self._NATIVE_ID_RE.match(native_id):
            raise CommandFailed(
                f"center {self.center_id}: no job id in the submit output {native_id[:80]!r}",
                command=command,
                exit_status=result.exit_status,
                stderr=_text(result.stderr),
                center=self.center_id,
            )
        return native_id

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
            f"{_text(result.stderr)[:500]}",
            command=command,
            exit_status=result.exit_status,
            stderr=_text(result.stderr),
            center=self.center_id,
        )

    def _refused(self, exc: SpecRefused) -> SubmitRejected:
        return SubmitRejected(
            f"center {self.center_id}: {exc}", center=self.center_id, field=exc.field
        )

    # ---------------------------------------------------- the Adapter contract
    async def submit(self, job: JobRequest) -> str:
        (outcome,) = await self.submit_many([job])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def submit_many(self, jobs: Sequence[JobRequest]) -> list[str | Exception]:
        """Each job's directory is laid out and the job submitted by one script; up to
        `batch_size` jobs (of this call or of concurrent ones, see `_dispatch`) share one
        remote command and `batch_parallel` such commands run at once over the pooled
        connection. A command that fails as a whole (the connection lost, its time up)
        leaves its jobs' outcome unknown: `CenterUnavailable` for each, for the caller
        to reconcile by gateway id. A caller cancelled before its jobs were sent leaves
        them unsent."""
        results: list[str | Exception | None] = [None] * len(jobs)
        for i, job in enumerate(jobs):
            try:
                self.check_job(job)  # refused before the center is reached
            except SpecRefused as exc:
                results[i] = self._refused(exc)
        ready: list[_Prepared] = []
        if any(r is None for r in results):
            home = await self.connection.home()
            root = await self.root()
        for i, job in enumerate(jobs):
            if results[i] is not None:
                continue
            jobdir = JobDir(root, job.gateway_id)
            try:
                job_script = self.render_job_script(job, jobdir, home)
            except SpecRefused as exc:
                results[i] = self._refused(exc)
                continue
            # The array spec tells the final-state read which elements to expect.
            extra = {ARRAY: job.array + "\n"} if job.array is not None else {}
            files = job_files(job_script, render_user_script(job), extra)
            ready.append(_Prepared(i, job, jobdir, files))
        loop = asyncio.get_running_loop()
        waiting: list[tuple[int, asyncio.Future[str | Exception]]] = []
        for prepared in ready:
            future: asyncio.Future[str | Exception] = loop.create_future()
            self._queue.append((prepared, future))
            waiting.append((prepared.index, future))
        self._dispatch()
        try:
            for i, future in waiting:
                results[i] = await future
        except BaseException:
            for _, future in waiting:
                future.cancel()  # a job not yet sent is never sent
            raise
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _dispatch(self) -> None:
        """Send what is queued, `batch_size` jobs per command, while fewer than
        `batch_parallel` commands are under way (fewer than `eager_commands` for a part
        of a batch). A job that arrives when the center is idle goes at once, alone;
        jobs that arrive meanwhile (a batch, or many clients at once) share the next
        commands."""
        # Leave sessions of the connection for the other calls meanwhile.
        limit = min(self.batch_parallel, max(1, self.target.max_sessions - 2))
        while self._queue and self._sending < limit:
            if self._sending >= self.eager_commands and len(self._queue) < self.batch_size:
                return  # the next command to end sends these, with those that come meanwhile
            chunk: list[tuple[_Prepared, asyncio.Future[str | Exception]]] = []
            while self._queue and len(chunk) < self.batch_size:
                prepared, future = self._queue.popleft()
                if not future.done():  # its caller gave up before it was sent
                    chunk.append((prepared, future))
            if not chunk:
                return
            self._sending += 1
            task = asyncio.create_task(self._send(chunk))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, chunk: list[tuple[_Prepared, asyncio.Future[str | Exception]]]) -> None:
        try:
            outcomes = await self._submit_chunk([p for p, _ in chunk])
        except BaseException as exc:
            unknown = CenterUnavailable(
                f"center {self.center_id}: the submission was interrupted ({exc!r}); "
                "its outcome is unknown",
                center=self.center_id,
            )
            outcomes = [unknown] * len(chunk)
            raise
        finally:
            self._sending -= 1
            for (_, future), outcome in zip(chunk, outcomes, strict=True):
                if not future.done():
                    future.set_result(outcome)
            self._dispatch()

    async def _submit_chunk(self, chunk: list[_Prepared]) -> list[str | Exception]:
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
    ) -> str | Exception:
        command = self.submit_command(jobdir)  # what ran for this job, as messages show it
        if answer is None:
            return CenterUnavailable(
                f"center {self.center_id}: the submission (exit {whole.exit_status}) gave "
                f"no answer for this job; its outcome is unknown: {_text(whole.stderr)[:300]}",
                center=self.center_id,
            )
        rc, stdout, stderr = answer
        if rc in JOB_DIR_FAILED:
            return CommandFailed(
                f"center {self.center_id}: could not write the job directory {jobdir.path}: "
                f"{_text(stderr)[:500]}",
                command=command,
                exit_status=rc,
                stderr=_text(stderr),
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
        out = _text(result.stdout)
        history: dict[str, NativeStatus] = {}
        if accounting is not None:
            head, _, out = out.partition(SEPARATOR + "\n")
            history = self.parse_accounting(head, _text(result.stderr), missing)
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
        out = _text((await self.run(command, stdin)).stdout)
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

    def already_gone(self, result: CommandResult) -> bool:
        """Whether a failed cancel only says the job has already finished."""
        return False

    async def output_chunk(self, request: OutputRequest) -> OutputChunk:
        # An array job has no plain `stdout`: element=None finds nothing, as it should.
        path = JobDir(await self.root(), request.gateway_id).file(
            element_file(request.stream, request.element)
        )
        offset, limit = request.offset, request.limit
        return await self.connection.sftp(lambda s: read_chunk(s, path, offset, limit))

    async def job_workdir(self, gateway_id: str, working_dir: str | None) -> str:
        if working_dir:
            return resolve_path(working_dir, await self.connection.home())
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


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def _split_status(result: CommandResult) -> tuple[CommandResult, str]:
    """`{ status; } ...; echo "SEPARATOR $?"; more`: the status command's own result
    (its exit status from the separator line), and what followed."""
    head, sep, rest = _text(result.stdout).partition(SEPARATOR + " ")
    if not sep:  # the shell did not get that far
        return result, ""
    status, _, tail = rest.partition("\n")
    code = int(status) if status.strip().isdigit() else result.exit_status
    return CommandResult(code, head.encode(), result.stderr), tail


def ping_failed(center_id: str, command: str, result: CommandResult) -> CommandFailed:
    """A scheduler ping that failed, with what it said (Slurm's on stdout, PBS's on stderr)."""
    said = " ".join(_text(result.stdout + result.stderr).split())[:300] or "no output"
    return CommandFailed(
        f"center {center_id}: '{command}' failed (exit {result.exit_status}): {said}",
        command=command,
        exit_status=result.exit_status,
        stderr=_text(result.stderr),
        center=center_id,
    )
