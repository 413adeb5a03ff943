"""What every check of the suite works with: the center, the login the gateway uses
there, the power service, the thresholds, and the evaluation's own directory."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from adapters.base import Adapter, CenterLoad
from adapters.batch.adapter import JobDirAdapter
from adapters.errors import FileExists, FileNotFound
from adapters.files.access import CenterFiles
from adapters.transport.ssh import SSHConnection
from gateway.centers.configured import Center
from gateway.centers.evaluation.models import Figures
from gateway.config_models import AdmissionConfig

log = logging.getLogger("hpcfed.evaluation")
T = TypeVar("T")

#: The longest any one remote call of a check may take (a command, an SFTP request,
#: a status query); a job's own run is bounded by `admission.job_timeout` instead.
CALL_TIMEOUT = 30.0
#: Cleaning up after the suite (cancelling jobs, removing the directory) may take this long.
CLEANUP_TIMEOUT = 20.0

Evidence = dict[str, Any]


class CheckFailed(Exception):
    """The check ran and the center did not do what it should; `message` says what."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PowerSource(Protocol):
    """What the suite asks of the computing-power service (gateway.computing_power)."""

    async def load(self, center_id: str, *, max_age: float | None = None) -> CenterLoad: ...

    async def descriptor(
        self, center_id: str, *, max_age: float | None = None
    ) -> dict[str, Any]: ...


async def bounded(aw: Awaitable[T], what: str, seconds: float = CALL_TIMEOUT) -> T:
    """`aw`, or CheckFailed naming `what` when it takes longer than `seconds`."""
    try:
        async with asyncio.timeout(seconds):
            return await aw
    except TimeoutError:
        raise CheckFailed(f"{what} did not answer within {seconds:g}s") from None


@dataclass
class Context:
    center: Center
    power: PowerSource
    admission: AdmissionConfig
    evaluation_id: str
    login: str | None  # None at a local center
    figures: Figures
    #: The descriptor as descriptor.valid fetched it, for descriptor.complete.
    descriptor: dict[str, Any] | None = None
    _workdir: str | None = None
    _workdir_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _making: asyncio.Future[object] | None = None

    @property
    def center_id(self) -> str:
        return self.center.id

    @property
    def is_local(self) -> bool:
        return self.center.is_local

    @property
    def adapter(self) -> Adapter:
        return self.center.adapter_for(self.login)

    @property
    def files(self) -> CenterFiles:
        return self.center.files_as(self.login)

    def connection(self) -> SSHConnection:
        """The pooled SSH connection of the gateway's login here."""
        adapter = self.adapter
        if not isinstance(adapter, JobDirAdapter):
            raise CheckFailed(f"center {self.center_id} is not reached over SSH")
        return adapter.connection

    async def workdir(self) -> str:
        """The evaluation's directory (relative to the login's first root), made on
        first use; removed by `cleanup`."""
        async with self._workdir_lock:
            if self._workdir is None:
                name = f"hpcfed-eval-{self.evaluation_id}"
                # Known, and its making shielded, before it is made: a mkdir cut short
                # (the gateway stopping) still finishes, and cleanup waits for it.
                self._workdir = name
                self._making = asyncio.ensure_future(self.files.mkdir(name))
                try:
                    await bounded(asyncio.shield(self._making), f"making the directory {name}")
                except FileExists:
                    pass  # left by an earlier attempt of this very evaluation
            return self._workdir

    async def workdir_full(self) -> str:
        """The evaluation directory's absolute path at the center."""
        return await bounded(self.files.resolve(await self.workdir()), "resolving a path")

    async def cleanup(self) -> None:
        """Remove the evaluation directory, if one was made; never raises."""
        if self._workdir is None:
            return
        name, self._workdir = self._workdir, None
        if self._making is not None:
            await asyncio.wait([self._making], timeout=CLEANUP_TIMEOUT)
        try:
            await bounded(
                self.files.remove(name, recursive=True), f"removing {name}", CLEANUP_TIMEOUT
            )
        except FileNotFound:
            pass  # its making was cut short before it happened
        except Exception as exc:
            log.warning("center %s: could not remove %s: %s", self.center_id, name, exc)


async def quietly(aw: Awaitable[object], what: str, center: str) -> None:
    """Best-effort clean-up work, bounded, its failure only logged."""
    try:
        async with asyncio.timeout(CLEANUP_TIMEOUT):
            await aw
    except Exception as exc:
        log.warning("center %s: %s failed: %s", center, what, exc)
