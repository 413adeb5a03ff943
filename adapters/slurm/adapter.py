"""Slurm centers: the adapter, and its cancel, ping and refusal handling. Scripts are
built in `adapters.slurm.script`, squeue/sacct answers read in `adapters.slurm.status`
and the load in `adapters.slurm.load`; `JobDirAdapter` runs them over the pooled SSH
connection. sbatch's refusals come on stderr (see `adapters.batch.rejections`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from adapters.base import CenterLoad, JobRequest, NativeStatus
from adapters.batch.adapter import JobDirAdapter, ping_failed
from adapters.batch.jobdir import JobDir, cancelled_marker_command
from adapters.batch.rejections import (
    SLURM_REJECTIONS,
    no_association,
    refused_field,
    scheduler_message,
)
from adapters.batch.truth import TruthQueries
from adapters.errors import CenterUnavailable, CommandFailed
from adapters.limits import AccountLimits
from adapters.slurm.limits import build_limits_command, parse_limits
from adapters.slurm.load import build_load_command, parse_load
from adapters.slurm.script import build_sbatch_script, check_sbatch_job
from adapters.slurm.status import (
    SLURM_ID_RE,
    build_sacct_command,
    build_squeue_command,
    parse_sacct,
    parse_squeue,
    parse_squeue_comments,
)
from adapters.slurm.truth import SLURM_TRUTH
from adapters.transport.framing import quote
from adapters.transport.ssh import CommandResult


def build_cancel_command(native_id: str, jobdir: JobDir) -> str:
    # The marker is written only once scancel accepted, so a refused cancel leaves no trace.
    return f"scancel {quote(native_id)} && {cancelled_marker_command(jobdir)}"


def cancel_refused_because_finished(stderr: str) -> bool:
    return "already completing or completed" in stderr or "Invalid job id" in stderr


#: The health probe: "Slurmctld(primary) at host is UP" (or DOWN) per controller.
PING_COMMAND = "scontrol ping"


def slurmctld_up(text: str) -> bool:
    """Whether `scontrol ping` says some controller is UP."""
    return re.search(r"\bis UP\b", text) is not None


def sbatch_rejection(
    result: CommandResult, job: JobRequest, login: str = "", center: str | None = None
) -> tuple[str, str | None]:
    """What sbatch said and the spec field it points at; a login without an association
    at the center gets a message saying so and the field `center` (the spec asked for
    nothing wrong: the center has not granted this login an account)."""
    said = scheduler_message(result.stdout, result.stderr)
    if login and (unassociated := no_association(said, job, login, center)) is not None:
        return unassociated, "center"
    return said, refused_field(said, SLURM_REJECTIONS, job, "slurm")


class SlurmAdapter(JobDirAdapter):
    """A Slurm center reached over SSH."""

    scheduler = "sbatch"
    submit_tool = "sbatch --parsable"
    family = "slurm"
    _NATIVE_ID_RE = SLURM_ID_RE

    _sacct_off_until = 0.0  # sacct is skipped until then after it said it is off

    def check_job(self, job: JobRequest) -> None:
        super().check_job(job)
        check_sbatch_job(job)

    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str:
        return build_sbatch_script(job, jobdir, home, self.default_queue)

    def rejection(self, result: CommandResult, job: JobRequest) -> tuple[str, str | None]:
        return sbatch_rejection(result, job, self.target.login, self.center_id)

    def status_command(self, native_ids: Sequence[str]) -> str:
        return build_squeue_command(self.target.login)

    def parse_status(
        self, result: CommandResult, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        if result.exit_status != 0:  # never read an empty listing from a failing squeue as "gone"
            raise CenterUnavailable(
                f"center {self.center_id}: squeue failed (exit {result.exit_status}): "
                f"{result.stderr.decode(errors='replace').strip()[:300]}",
                center=self.center_id,
            )
        return parse_squeue(result.stdout.decode(errors="replace"))

    def element_native_id(self, array_id: str, index: int, started: str | None) -> str:
        return f"{array_id}_{index}"  # what squeue, sacct and scancel call an element

    def accounting_command(self, native_ids: Sequence[str]) -> str | None:
        if time.monotonic() < self._sacct_off_until:
            return None
        return build_sacct_command(native_ids)

    def parse_accounting(
        self, text: str, stderr: str, native_ids: Sequence[str]
    ) -> dict[str, NativeStatus]:
        if "accounting storage is disabled" in stderr or "slurmdbd" in stderr:
            self._sacct_off_until = time.monotonic() + 600.0  # ask again in a while, not per tick
        return parse_sacct(text)

    def cancel_command(self, native_id: str, jobdir: JobDir) -> str:
        return build_cancel_command(native_id, jobdir)

    def already_gone(self, result: CommandResult) -> bool:
        return cancel_refused_because_finished(result.stderr.decode(errors="replace"))

    def listing_command(self) -> str | None:
        return build_squeue_command(self.target.login)

    def parse_listing(self, text: str) -> dict[str, str]:
        return parse_squeue_comments(text)

    def load_command(self) -> str | None:
        return build_load_command()

    def truth_queries(self) -> TruthQueries:
        return SLURM_TRUTH

    async def ping(self) -> None:
        # Not counted in remote_commands: that counts the job and status traffic.
        result = await self.connection.run(PING_COMMAND)
        if result.exit_status != 0 or not slurmctld_up(result.stdout.decode(errors="replace")):
            raise ping_failed(self.center_id, PING_COMMAND, result)

    def parse_load(self, result: CommandResult, queried_at: float) -> CenterLoad:
        return parse_load(result.stdout.decode(errors="replace"), queried_at)

    async def account_limits(self) -> AccountLimits | None:
        """This login's associations and QoS limits (`adapters.slurm.adapter.limits`); None at a
        cluster without slurmdbd. Not counted in remote_commands, as `ping` is not."""
        command = build_limits_command(self.target.login)
        queried_at = time.time()
        result = await self.connection.run(command)
        if result.exit_status != 0:
            raise CommandFailed(
                f"center {self.center_id}: the accounting limits query failed "
                f"(exit {result.exit_status}): "
                f"{result.stderr.decode(errors='replace').strip()[:300]}",
                command=command,
                exit_status=result.exit_status,
                stderr=result.stderr.decode(errors="replace"),
                center=self.center_id,
            )
        return parse_limits(result.stdout.decode(errors="replace"), self.target.login, queried_at)
