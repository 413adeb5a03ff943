"""What a batch scheduler supplies to the flow every batch center shares
(`adapters.batch.adapter.JobDirAdapter`, which runs them over the pooled
connection): pure builders of its commands and parsers of what they print, no I/O.
A center type (Slurm, PBS) subclasses `JobDirAdapter` and overrides these.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping, Sequence

from adapters.base import ArrayElement, CenterLoad, JobRequest, NativeStatus
from adapters.batch.jobdir import JobDir, check_request, submit_command
from adapters.batch.markers import JobMarkers
from adapters.errors import CommandFailed, SubmitRejected
from adapters.transport.ssh import CommandResult


def decoded(data: bytes) -> str:
    """A command's output as text; bytes that are not UTF-8 are replaced, not fatal."""
    return data.decode(errors="replace")


class BatchScheduler(abc.ABC):
    """The commands and parsers of one batch scheduler."""

    center_id: str
    scheduler = "batch"  # the submit command, for messages
    family = "batch"  # the key of the spec's extra_directives for this kind of center
    _NATIVE_ID_RE = re.compile(r"^[0-9A-Za-z._\[\]-]{1,128}$")
    #: The status command lists every element of an array not yet ended, pending
    #: ones included, so an element it does not list has left the queue.
    lists_pending_elements = True
    #: The status command cannot tell an array job from others: it also reads each
    #: tracked job's `array` marker (in the same remote command).
    reads_array_markers = False
    #: The scheduler's submit command, given the job script's name (`sbatch --parsable`).
    submit_tool = ""

    def check_job(self, job: JobRequest) -> None:
        """Refuse (SpecRefused) what this scheduler cannot be asked for, before any contact."""
        check_request(job, self._NATIVE_ID_RE, self.family)

    @abc.abstractmethod
    def render_job_script(self, job: JobRequest, jobdir: JobDir, home: str) -> str: ...

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
        """The native id a submission printed; SubmitRejected (naming the spec field the
        scheduler's message points at) when it refused the job."""
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
        native_id = decoded(result.stdout).split(";")[0].strip()  # sbatch: "id[;cluster]"
        if not self._NATIVE_ID_RE.match(native_id):
            raise CommandFailed(
                f"center {self.center_id}: no job id in the submit output {native_id[:80]!r}",
                command=command,
                exit_status=result.exit_status,
                stderr=decoded(result.stderr),
                center=self.center_id,
            )
        return native_id

    def already_gone(self, result: CommandResult) -> bool:
        """Whether a failed cancel only says the job has already finished."""
        return False
