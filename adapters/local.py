"""The embedded default center: jobs are real processes on the gateway's machine.

No scheduler: a job is a process group started from a small wrapper script
that records the exit status in the job's directory, so states survive a
gateway restart. At most `max_running` jobs run at once; the rest wait QUEUED
and are started, oldest first, as slots free up.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.base import (
    DEPENDENCY_SATISFIED_BY,
    GATEWAY_ID_RE,
    Adapter,
    AdapterError,
    JobRequest,
    JobState,
    NativeJobNotFound,
    NativeStatus,
    OutputChunk,
)
from adapters.jobdir import (
    CANCELLED,
    EXIT_CODE,
    JOB_SCRIPT,
    STDERR,
    STDOUT,
    USER_SCRIPT,
    JobDir,
    render_body,
    render_user_script,
)

#: Files of a local job's directory beside the shared ones.
DEPENDENCIES = "dependencies"  # one "<condition> <parent gateway id>" a line
REASON = "reason"  # why the job was cancelled here
#: `timeout(1)` exits with this status when the walltime ran out.
TIMEOUT_STATUS = 124
#: Variables a local job inherits from the gateway; nothing else leaks into it.
INHERITED_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SHELL")


def render_job_script(job: JobRequest, jobdir: JobDir) -> str:
    """The script that runs the job and records how it ended, as at every center."""
    launcher = ("timeout", "-k", "10", str(job.walltime_seconds)) if job.walltime_seconds else ()
    home = os.path.expanduser("~")
    return "#!/bin/bash\n" + render_body(job, jobdir, home, launcher)


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            # The state letter follows the parenthesised command name.
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


class LocalAdapter(Adapter):
    def __init__(self, center_id: str, work_root: Path, *, max_running: int = 4) -> None:
        self.center_id = center_id
        self.work_root = work_root
        self.max_running = max_running
        self.remote_commands = 0
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def _jobdir(self, gateway_id: str) -> JobDir:
        return JobDir(str(self.work_root), gateway_id)

    def _dir(self, gateway_id: str) -> Path:
        return Path(self._jobdir(gateway_id).path)

    # ------------------------------------------------------------ submit

    async def submit(self, job: JobRequest) -> str:
        return await asyncio.to_thread(self._submit, job)

    def _submit(self, job: JobRequest) -> str:
        jobdir = self._jobdir(job.gateway_id)
        job_dir = Path(jobdir.path)
        job_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if (job_dir / JOB_SCRIPT).exists():
            return job.gateway_id  # submitted before: never start it twice
        user_script = job_dir / USER_SCRIPT
        user_script.write_text(render_user_script(job), encoding="utf-8")
        user_script.chmod(0o700)
        if job.dependencies:
            for condition, parent in job.dependencies:
                if condition not in DEPENDENCY_SATISFIED_BY or not GATEWAY_ID_RE.match(parent):
                    raise ValueError(f"not a dependency of this center: {condition} {parent}")
            (job_dir / DEPENDENCIES).write_text(
                "".join(f"{cond} {parent}\n" for cond, parent in job.dependencies), "ascii"
            )
        (job_dir / "queued").touch()
        # job.sh appears last and whole: its presence means "submitted" (find_by_gateway_id).
        tmp = job_dir / (JOB_SCRIPT + ".tmp")
        tmp.write_text(render_job_script(job, jobdir), encoding="utf-8")
        tmp.chmod(0o700)
        tmp.rename(job_dir / JOB_SCRIPT)
        self._start_queued()
        return job.gateway_id

    def _running(self) -> int:
        return sum(1 for p in self._procs.values() if p.poll() is None)

    def _start_queued(self) -> None:
        queued = sorted(
            (self.work_root / "jobs").glob("*/queued"), key=lambda p: p.stat().st_mtime_ns
        )
        for marker in queued:
            verdict = self._dependencies(marker.parent)
            if verdict == "never":
                (marker.parent / REASON).write_text(
                    "its dependencies can never be satisfied", encoding="utf-8"
                )
                (marker.parent / CANCELLED).touch()
                marker.unlink(missing_ok=True)
            elif verdict == "ready":
                if self._running() >= self.max_running:
                    return
                self._start(marker.parent)

    def _dependencies(self, job_dir: Path) -> str:
        """'ready', 'wait' or 'never', from the parents' states (their job dirs here)."""
        try:
            lines = (job_dir / DEPENDENCIES).read_text(encoding="ascii").split("\n")
        except FileNotFoundError:
            return "ready"
        verdict = "ready"
        for line in filter(None, lines):
            condition, parent = line.split()
            status = self._status(parent, self._dir(parent))
            state = status.state if status else JobState.UNKNOWN
            if state in DEPENDENCY_SATISFIED_BY[condition]:
                continue
            if state.is_terminal or status is None:
                return "never"
            verdict = "wait"
        return verdict

    def _start(self, job_dir: Path) -> None:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        with open(job_dir / STDOUT, "ab") as out, open(job_dir / STDERR, "ab") as err:
            proc = subprocess.Popen(
                ["/bin/bash", str(job_dir / JOB_SCRIPT)],
                cwd=job_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=env,
                start_new_session=True,  # its own process group, so cancel reaches children
            )
        (job_dir / "pid").write_text(f"{proc.pid}\n", encoding="ascii")
        (job_dir / "queued").unlink(missing_ok=True)
        self._procs[job_dir.name] = proc

    # ------------------------------------------------------------ status

    async def status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        return await asyncio.to_thread(self._status_many, jobs)

    def _status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        self._start_queued()
        result = {}
        for native_id, gateway_id in jobs.items():
            status = self._status(native_id, self._dir(gateway_id))
            if status is not None:
                result[native_id] = status
        return result

    def _status(self, native_id: str, job_dir: Path) -> NativeStatus | None:
        if not job_dir.is_dir():
            return None
        cancelled = (job_dir / CANCELLED).exists()
        exit_file = job_dir / EXIT_CODE
        if exit_file.exists():
            self._procs.pop(job_dir.name, None)
            code = int(exit_file.read_text(encoding="ascii").strip() or "1")
            if cancelled:
                return NativeStatus(native_id, JobState.CANCELLED, "cancelled", exit_code=code)
            if code == TIMEOUT_STATUS:
                return NativeStatus(
                    native_id, JobState.TIMEOUT, "timeout", "walltime exceeded", exit_code=code
                )
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            return NativeStatus(native_id, state, "exited", exit_code=code)
        if (job_dir / "queued").exists():
            waiting = "waiting for a free slot"
            if (job_dir / DEPENDENCIES).exists() and self._dependencies(job_dir) == "wait":
                waiting = "waiting for the jobs it depends on"
            return NativeStatus(native_id, JobState.QUEUED, "queued", waiting)
        pid = self._pid(job_dir)
        proc = self._procs.get(job_dir.name)
        alive = proc.poll() is None if proc else pid is not None and _process_alive(pid)
        if alive:
            return NativeStatus(native_id, JobState.RUNNING, "running")
        if cancelled:
            reason = (job_dir / REASON).read_text() if (job_dir / REASON).exists() else None
            return NativeStatus(native_id, JobState.CANCELLED, "cancelled", reason)
        return NativeStatus(
            native_id, JobState.FAILED, "lost", "the process ended without recording an exit status"
        )

    @staticmethod
    def _pid(job_dir: Path) -> int | None:
        try:
            return int((job_dir / "pid").read_text(encoding="ascii"))
        except (OSError, ValueError):
            return None

    async def find_by_gateway_id(self, gateway_ids: Sequence[str]) -> dict[str, str]:
        return {g: g for g in gateway_ids if (self._dir(g) / JOB_SCRIPT).exists()}

    # ------------------------------------------------------------ cancel, output

    async def cancel(self, native_id: str, gateway_id: str) -> None:
        await asyncio.to_thread(self._cancel, gateway_id)

    def _cancel(self, gateway_id: str) -> None:
        job_dir = self._dir(gateway_id)
        if not job_dir.is_dir():
            raise NativeJobNotFound(f"job {gateway_id} is unknown here", center=self.center_id)
        if (job_dir / EXIT_CODE).exists():
            return
        (job_dir / CANCELLED).touch()
        (job_dir / "queued").unlink(missing_ok=True)
        pid = self._pid(job_dir)
        if pid is not None and _process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)

    async def read_output(
        self,
        native_id: str,
        gateway_id: str,
        stream: str,
        offset: int = 0,
        limit: int = 1 << 20,
        element: int | None = None,
    ) -> OutputChunk:
        if stream not in (STDOUT, STDERR):
            raise AdapterError(f"unknown stream {stream!r}", center=self.center_id)
        return await asyncio.to_thread(self._read, self._dir(gateway_id) / stream, offset, limit)

    @staticmethod
    def _read(path: Path, offset: int, limit: int) -> OutputChunk:
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
                return OutputChunk(fh.read(limit), offset, size)
        except FileNotFoundError:
            return OutputChunk(b"", offset, None, exists=False)

    async def close(self) -> None:
        # Jobs outlive the gateway; only forget the handles.
        self._procs.clear()
