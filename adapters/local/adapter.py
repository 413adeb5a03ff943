"""The embedded default center: jobs are real processes on the gateway's machine.

No scheduler: a job (or each element of an array job) is a process group
started from the same job script every center uses (`adapters.batch.adapter.jobdir`), which
records the exit status in the job's directory, so states survive a gateway
restart. At most `max_running` processes run at once; the rest wait QUEUED and
start, oldest first, once a slot is free and their dependencies hold. The
walltime is enforced with `timeout(1)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from adapters.base import (
    DEPENDENCY_SATISFIED_BY,
    GATEWAY_ID_RE,
    Adapter,
    ArrayElement,
    CenterLoad,
    JobRequest,
    JobState,
    NativeStatus,
    OutputChunk,
    OutputRequest,
    PartitionLoad,
)
from adapters.batch.jobdir import (
    ARRAY,
    CANCELLED,
    EXIT_CODE,
    JOB_SCRIPT,
    TIMES,
    USER_SCRIPT,
    JobDir,
    array_indices,
    element_file,
    render_body,
    render_user_script,
    resolve_path,
)
from adapters.batch.markers import parse_times
from adapters.batch.settle import as_element, with_times
from adapters.errors import NativeJobNotFound

#: Files of a local job's directory beside the shared ones (per element: ".<index>").
QUEUED = "queued"  # waiting for a slot or its dependencies
PID = "pid"
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
    return "#!/bin/bash\n" + render_body(job, jobdir, home, launcher, redirect_output=True)


def _process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            # The state letter follows the parenthesised command name.
            return fh.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _memory_mib() -> int:
    """This machine's memory (MemTotal of /proc/meminfo), in MiB."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None


class LocalAdapter(Adapter):
    def __init__(self, center_id: str, work_root: Path, *, max_running: int = 4) -> None:
        self.center_id = center_id
        self.work_root = work_root
        self.max_running = max_running
        self.remote_commands = 0
        self._procs: dict[tuple[str, int | None], subprocess.Popen[bytes]] = {}
        # Submissions and status ticks run in threads of their own; one at a time may
        # start queued jobs, or two would both see a job queued and start it twice.
        self._starting = threading.Lock()

    def _dir(self, gateway_id: str) -> Path:
        return Path(JobDir(str(self.work_root), gateway_id).path)

    @staticmethod
    def _units(job_dir: Path) -> list[int | None]:
        """[None] for a plain job, the element indices of an array job."""
        spec = _read(job_dir / ARRAY)
        return [None] if spec is None else list(array_indices(spec))

    # ------------------------------------------------------------ submit

    async def submit(self, job: JobRequest) -> str:
        return await asyncio.to_thread(self._submit, job)

    def _submit(self, job: JobRequest) -> str:
        jobdir = JobDir(str(self.work_root), job.gateway_id)
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
        if job.array is not None:
            (job_dir / ARRAY).write_text(job.array + "\n", encoding="ascii")
        for index in self._units(job_dir):
            (job_dir / element_file(QUEUED, index)).touch()
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
        with self._starting:
            self._start_queued_locked()

    def _start_queued_locked(self) -> None:
        queued = sorted(
            (self.work_root / "jobs").glob(f"*/{QUEUED}*"), key=lambda p: p.stat().st_mtime_ns
        )
        for marker in queued:
            job_dir = marker.parent
            index = None if marker.name == QUEUED else int(marker.name.rsplit(".", 1)[1])
            verdict = self._dependencies(job_dir)
            if verdict == "never":
                (job_dir / REASON).write_text("its dependencies can never be satisfied", "utf-8")
                (job_dir / CANCELLED).touch()
                for stale in job_dir.glob(f"{QUEUED}*"):
                    stale.unlink(missing_ok=True)
            elif verdict == "ready":
                if self._running() >= self.max_running:
                    return
                self._start(job_dir, index)

    def _dependencies(self, job_dir: Path) -> str:
        """'ready', 'wait' or 'never', from the parents' states (their job dirs here)."""
        lines = _read(job_dir / DEPENDENCIES)
        verdict = "ready"
        for line in (lines or "").splitlines():
            condition, parent = line.split()
            status = self._status(parent, self._dir(parent))
            state = status.state if status else JobState.UNKNOWN
            if state in DEPENDENCY_SATISFIED_BY[condition]:
                continue
            if state.is_terminal or status is None:
                return "never"
            verdict = "wait"
        return verdict

    def _start(self, job_dir: Path, index: int | None) -> None:
        env = {k: os.environ[k] for k in INHERITED_ENV if k in os.environ}
        if index is not None:
            env["HPCFED_ARRAY_INDEX"] = str(index)
        proc = subprocess.Popen(
            ["/bin/bash", str(job_dir / JOB_SCRIPT)],
            cwd=job_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # job.sh sends its output into the job dir itself
            stderr=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own process group, so cancel reaches children
        )
        (job_dir / element_file(PID, index)).write_text(f"{proc.pid}\n", encoding="ascii")
        (job_dir / element_file(QUEUED, index)).unlink(missing_ok=True)
        self._procs[(job_dir.name, index)] = proc

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
        units = self._units(job_dir)
        if units == [None]:
            return self._unit_status(native_id, job_dir, None)
        elements: list[ArrayElement] = []
        for index in units:
            unit = self._unit_status(f"{native_id}_{index}", job_dir, index)
            elements.append(as_element(index, unit))
        # The gateway derives the whole job's state from the elements; the whole ran from
        # the first element's start to the last one's end.
        starts = [e.started_at for e in elements if e.started_at is not None]
        ends = [e.ended_at for e in elements if e.ended_at is not None]
        ended = all(e.state.is_terminal for e in elements)
        return NativeStatus(
            native_id,
            JobState.UNKNOWN,
            "array",
            elements=tuple(elements),
            started_at=min(starts, default=None),
            ended_at=max(ends, default=None) if ended else None,
        )

    def _unit_status(self, native_id: str, job_dir: Path, index: int | None) -> NativeStatus:
        """One job or element, with the times its job.sh recorded in `times[.<index>]`:
        read after the exit status, which job.sh writes after the end."""
        status = self._unit_end(native_id, job_dir, index)
        started_at, ended_at = parse_times(_read(job_dir / element_file(TIMES, index)) or "")
        return with_times(status, started_at, ended_at)

    def _unit_end(self, native_id: str, job_dir: Path, index: int | None) -> NativeStatus:
        cancelled = (job_dir / CANCELLED).exists()
        code_text = _read(job_dir / element_file(EXIT_CODE, index))
        if code_text is not None:
            self._procs.pop((job_dir.name, index), None)
            code = int(code_text or "1")
            if cancelled and code != 0:
                return NativeStatus(native_id, JobState.CANCELLED, "cancelled", exit_code=code)
            if code == TIMEOUT_STATUS:
                return NativeStatus(
                    native_id, JobState.TIMEOUT, "timeout", "walltime exceeded", exit_code=code
                )
            state = JobState.COMPLETED if code == 0 else JobState.FAILED
            return NativeStatus(native_id, state, "exited", exit_code=code)
        if (job_dir / element_file(QUEUED, index)).exists():
            waiting = "waiting for a free slot"
            if self._dependencies(job_dir) == "wait":
                waiting = "waiting for the jobs it depends on"
            return NativeStatus(native_id, JobState.QUEUED, "queued", waiting)
        pid_text = _read(job_dir / element_file(PID, index))
        proc = self._procs.get((job_dir.name, index))
        if proc is not None:
            alive = proc.poll() is None
        else:
            alive = bool(pid_text and pid_text.isdigit() and _process_alive(int(pid_text)))
        if alive:
            return NativeStatus(native_id, JobState.RUNNING, "running")
        if _read(job_dir / element_file(EXIT_CODE, index)) is not None:
            # It wrote its exit status and exited between the first read and this one.
            return self._unit_end(native_id, job_dir, index)
        if cancelled:
            return NativeStatus(native_id, JobState.CANCELLED, "cancelled", _read(job_dir / REASON))
        return NativeStatus(
            native_id, JobState.FAILED, "lost", "the process ended without recording an exit status"
        )

    async def find_by_gateway_id(self, gateway_ids: Sequence[str]) -> dict[str, str]:
        return {g: g for g in gateway_ids if (self._dir(g) / JOB_SCRIPT).exists()}

    # ------------------------------------------------------------ load

    async def load(self) -> CenterLoad:
        return await asyncio.to_thread(self._load)

    def _load(self) -> CenterLoad:
        # Only reads: starting queued jobs stays with the status tick, so two threads
        # never start the same job.
        queried_at = time.time()
        jobs = self.work_root / "jobs"
        queued = sum(1 for _ in jobs.glob(f"*/{QUEUED}*"))
        running = 0
        for pid_file in jobs.glob(f"*/{PID}*"):
            index = None if pid_file.name == PID else pid_file.name.rsplit(".", 1)[1]
            ended = pid_file.parent / (EXIT_CODE if index is None else f"{EXIT_CODE}.{index}")
            pid = _read(pid_file) or ""
            if not ended.exists() and pid.isdigit() and _process_alive(int(pid)):
                running += 1  # a job of ours, though perhaps started before a restart
        cores = os.cpu_count() or 1
        slot_free = running < self.max_running
        # A job holds a slot, not cores; with every slot taken no core is free for a new job.
        allocated = min(running, cores) if slot_free else cores
        partition = PartitionLoad(
            name="local",
            default=True,
            available=True,
            nodes_total=1,
            nodes_idle=0 if running else 1,
            nodes_allocated=1 if running else 0,
            nodes_down=0,
            cores_total=cores,
            cores_idle=cores - allocated,
            cores_allocated=allocated,
            cores_down=0,
            cores_per_node=cores,
            memory_per_node_mib=_memory_mib(),
            max_walltime_seconds=None,
            max_nodes_per_job=1,
            jobs_queued=queued,
            jobs_running=running,
            estimated_wait_seconds=0.0 if slot_free else None,
        )
        return CenterLoad((partition,), queried_at, jobs_queued=queued, jobs_running=running)

    # ------------------------------------------------------------ cancel, output

    async def cancel(self, native_id: str, gateway_id: str) -> None:
        await asyncio.to_thread(self._cancel, gateway_id)

    def _cancel(self, gateway_id: str) -> None:
        job_dir = self._dir(gateway_id)
        if not job_dir.is_dir():
            raise NativeJobNotFound(f"job {gateway_id} is unknown here", center=self.center_id)
        units = self._units(job_dir)
        if all((job_dir / element_file(EXIT_CODE, i)).exists() for i in units):
            return  # it has ended; cancelling now must not rewrite how
        (job_dir / CANCELLED).touch()
        for index in units:
            (job_dir / element_file(QUEUED, index)).unlink(missing_ok=True)
            pid_text = _read(job_dir / element_file(PID, index))
            if pid_text and pid_text.isdigit() and _process_alive(int(pid_text)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(pid_text), signal.SIGTERM)

    async def output_chunk(self, request: OutputRequest) -> OutputChunk:
        path = self._dir(request.gateway_id) / element_file(request.stream, request.element)
        return await asyncio.to_thread(self._read_chunk, path, request.offset, request.limit)

    @staticmethod
    def _read_chunk(path: Path, offset: int, limit: int) -> OutputChunk:
        try:
            with open(path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                fh.seek(offset)
                return OutputChunk(fh.read(limit), offset, size)
        except FileNotFoundError:
            return OutputChunk(b"", offset, None, exists=False)

    async def job_workdir(self, gateway_id: str, working_dir: str | None) -> str:
        if working_dir:
            return resolve_path(working_dir, os.path.expanduser("~"))  # noqa: ASYNC240 - no I/O
        return str(self._dir(gateway_id))

    async def ping(self) -> None:
        """No scheduler here: the gateway's own processes always answer."""

    async def close(self) -> None:
        # Jobs outlive the gateway; only forget the handles.
        self._procs.clear()
