"""The flow shared by batch schedulers (Slurm, PBS) reached over SSH.

Submit, poll, cancel and read output of jobs kept in job directories
(`adapters.jobdir`); a subclass supplies pure command builders and output
parsers for its scheduler, and this class runs them over the pooled connection.
"""

from __future__ import annotations

import abc
import posixpath
import re
from collections.abc import Mapping, Sequence

from adapters.base import (
    GATEWAY_ID_RE,
    Adapter,
    CommandFailed,
    JobRequest,
    NativeStatus,
    OutputChunk,
    SubmitRejected,
)
from adapters.jobdir import (
    NATIVE_ID,
    SEPARATOR,
    STDERR,
    STDOUT,
    JobDir,
    markers_command,
    needs_job_dir,
    parse_markers,
    read_chunk,
    render_user_script,
    resolve_path,
    settle,
    write_job_files,
)
from adapters.ssh import CommandResult, SSHConnection, SSHPool, SSHTarget


class JobDirAdapter(Adapter):
    """Submit, poll, cancel and read output of batch jobs kept in job directories."""

    scheduler = "batch"  # for messages
    _NATIVE_ID_RE = re.compile(r"^[0-9A-Za-z._\[\]-]{1,128}$")

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

    # ---------------------------------------------------- subclass hooks (pure)
    @abc.abstractmethod
    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str: ...

    @abc.abstractmethod
    def submit_command(self, jobdir: JobDir) -> str: ...

    @abc.abstractmethod
    def status_command(self, native_ids: Sequence[str]) -> str: ...

    @abc.abstractmethod
    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]: ...

    @abc.abstractmethod
    def cancel_command(self, native_id: str, jobdir: JobDir) -> str: ...

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        """A command learning final states from the scheduler's history, if any."""
        return None

    def parse_accounting(self, text: str, stderr: str) -> dict[str, NativeStatus]:
        return {}

    def listing_command(self) -> str | None:
        """A command listing jobs with the gateway ids they carry, if the scheduler keeps them."""
        return None

    def parse_listing(self, text: str) -> dict[str, str]:
        """gateway id -> native id from `listing_command`'s output."""
        return {}

    def parse_submit(self, result: CommandResult, command: str) -> str:
        if result.exit_status != 0:
            raise SubmitRejected(
                f"center {self.center_id}: {self.scheduler} refused the job "
                f"(exit {result.exit_status}): {_text(result.stderr)[:500]}",
                command=command,
                exit_status=result.exit_status,
                stderr=_text(result.stderr),
                center=self.center_id,
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

    # ---------------------------------------------------- the Adapter contract
    async def submit(self, job: JobRequest) -> str:
        home = await self.connection.home()
        jobdir = JobDir(await self.root(), job.gateway_id)
        job_script = self.render_job_script(job, jobdir, home)
        user_script = render_user_script(job)
        existing = await self.connection.sftp(
            lambda s: write_job_files(s, jobdir, job_script, user_script)
        )
        if existing:  # a lost reply: the job is already at the center
            return existing
        command = self.submit_command(jobdir)
        return self.parse_submit(await self.run(command), command)

    async def status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        tracked = {
            nid: gid
            for nid, gid in jobs.items()
            if self._NATIVE_ID_RE.match(nid) and GATEWAY_ID_RE.match(gid)
        }
        if not tracked:
            return {}
        command = self.status_command(list(tracked))
        statuses = self.parse_status(await self.run(command), list(tracked))
        unsettled = {n: g for n, g in tracked.items() if needs_job_dir(statuses.get(n))}
        if unsettled:
            statuses.update(await self._final_states(unsettled, statuses))
        return {nid: statuses[nid] for nid in tracked if nid in statuses}

    async def _final_states(
        self, jobs: Mapping[str, str], known: Mapping[str, NativeStatus]
    ) -> dict[str, NativeStatus]:
        """One command: the scheduler's history (where it keeps one) and the marker files."""
        marker_cmd, stdin = markers_command(await self.root(), list(jobs.values()))
        missing = [nid for nid in jobs if nid not in known]
        accounting = self.accounting_command(missing) if missing else None
        command = marker_cmd
        if accounting is not None:
            command = f"{accounting} </dev/null; echo {SEPARATOR}; {marker_cmd}"
        result = await self.run(command, stdin)
        out = _text(result.stdout)
        history: dict[str, NativeStatus] = {}
        if accounting is not None:
            head, _, out = out.partition(SEPARATOR + "\n")
            history = self.parse_accounting(head, _text(result.stderr))
        markers = parse_markers(out)
        return {
            nid: settle(nid, known.get(nid) or history.get(nid), markers.get(gid))
            for nid, gid in jobs.items()
        }

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
            if markers.native_id and gid in gids:
                found[gid] = markers.native_id
        return found

    async def cancel(self, native_id: str, gateway_id: str) -> None:
        if not self._NATIVE_ID_RE.match(native_id):
            raise ValueError(f"not a {self.scheduler} job id: {native_id!r}")
        command = self.cancel_command(native_id, JobDir(await self.root(), gateway_id))
        result = await self.run(command)
        if result.exit_status != 0 and not self.already_gone(result):
            raise self._failed("cancel", command, result)

    def already_gone(self, result: CommandResult) -> bool:
        """Whether a failed cancel only says the job has already finished."""
        return False

    async def read_output(
        self, native_id: str, gateway_id: str, stream: str, offset: int = 0, limit: int = 1 << 20
    ) -> OutputChunk:
        if stream not in (STDOUT, STDERR):
            raise ValueError(f"stream must be stdout or stderr, got {stream!r}")
        if offset < 0 or limit < 0:
            raise ValueError("offset and limit must not be negative")
        path = JobDir(await self.root(), gateway_id).file(stream)
        return await self.connection.sftp(lambda s: read_chunk(s, path, offset, limit))

    async def close(self) -> None:
        """The pool belongs to whoever made it; nothing of our own to release."""


def _text(data: bytes) -> str:
    return data.decode(errors="replace")
