"""A center type that lives in the test tree: `fakesched`, a scheduler of nothing but
a state machine. The gateway knows it only through `adapters.registry`.

A job is QUEUED when first asked about, RUNNING next, and COMPLETED once it has been
asked about `polls_to_finish` times; its stdout then holds what `echo` of its
arguments would print (a script's job prints the script's first line).
"""

from __future__ import annotations

import getpass
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import Field

from adapters.base import (
    Adapter,
    JobRequest,
    JobState,
    NativeStatus,
    OutputChunk,
    OutputRequest,
)
from adapters.errors import NativeJobNotFound
from adapters.files.access import CenterFiles
from adapters.files.local import LocalFS
from adapters.registry import CenterSite, CenterType, TypeSettings

NAME = "fakesched"


class FakeSchedSettings(TypeSettings):
    """A fakesched center's `fakesched` section."""

    polls_to_finish: int = Field(2, ge=1, le=100, description="status asks until COMPLETED")
    files_home: str = Field("fakesched-files", description="its files; under data_dir")


@dataclass
class _Job:
    gateway_id: str
    output: bytes
    asked: int = 0
    cancelled: bool = False


class FakeSchedAdapter(Adapter):
    """Jobs held in memory; each status ask moves them one step on."""

    def __init__(self, center_id: str, polls_to_finish: int) -> None:
        self.center_id = center_id
        self.polls_to_finish = polls_to_finish
        self.jobs: dict[str, _Job] = {}
        self._ids = itertools.count(1)

    async def submit(self, job: JobRequest) -> str:
        self.remote_commands += 1
        said = (
            " ".join(job.arguments) if job.command == "echo" else (job.script or "").split("\n")[0]
        )
        native_id = f"fake-{next(self._ids)}"
        self.jobs[native_id] = _Job(job.gateway_id, said.encode() + b"\n")
        return native_id

    def _status(self, native_id: str, job: _Job) -> NativeStatus:
        if job.cancelled:
            return NativeStatus(native_id, JobState.CANCELLED, "CANCELLED")
        job.asked += 1
        if job.asked >= self.polls_to_finish:
            return NativeStatus(native_id, JobState.COMPLETED, "DONE", exit_code=0)
        if job.asked > 1:
            return NativeStatus(native_id, JobState.RUNNING, "BUSY")
        return NativeStatus(native_id, JobState.QUEUED, "WAITING")

    async def status_many(self, jobs: Mapping[str, str]) -> dict[str, NativeStatus]:
        self.remote_commands += 1
        return {nid: self._status(nid, self.jobs[nid]) for nid in jobs if nid in self.jobs}

    async def find_by_gateway_id(self, gateway_ids: Sequence[str]) -> dict[str, str]:
        wanted = set(gateway_ids)
        return {j.gateway_id: nid for nid, j in self.jobs.items() if j.gateway_id in wanted}

    async def cancel(self, native_id: str, gateway_id: str) -> None:
        if native_id in self.jobs:
            self.jobs[native_id].cancelled = True

    async def output_chunk(self, request: OutputRequest) -> OutputChunk:
        job = self.jobs.get(request.native_id)
        if job is None:
            raise NativeJobNotFound(f"no job {request.native_id} here", center=self.center_id)
        data = job.output if request.stream == "stdout" else b""
        start = request.offset
        return OutputChunk(data[start : start + request.limit], start, len(data))

    async def ping(self) -> None:
        return None


def make_adapter(site: CenterSite) -> FakeSchedAdapter:
    settings = site.settings
    assert isinstance(settings, FakeSchedSettings)
    return FakeSchedAdapter(site.center_id, settings.polls_to_finish)


def make_files(site: CenterSite) -> CenterFiles:
    settings = site.settings
    assert isinstance(settings, FakeSchedSettings)
    home = site.data_path(settings.files_home)
    home.mkdir(parents=True, exist_ok=True)
    return CenterFiles(site.center_id, getpass.getuser(), LocalFS(str(home)), site.roots)


FAKE_SCHED = CenterType(
    name=NAME,
    section=NAME,
    settings_model=FakeSchedSettings,
    make_adapter=make_adapter,
    make_files=make_files,
    needs_ssh=False,
    runs_on_gateway_host=True,
    description="a state machine in the test tree",
)
