"""status_many's flow over recorded outputs: at most two commands a tick, final states
learned from the job directory once a job has left squeue."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import JobState
from adapters.batch.markers import SEPARATOR
from adapters.errors import CenterUnavailable
from adapters.slurm.adapter import SlurmAdapter
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SQUEUE = (FIXTURES / "slurm" / "squeue_mixed.txt").read_text()
MARKERS = (FIXTURES / "jobdir" / "markers.txt").read_text()
SACCT_OFF = (FIXTURES / "slurm" / "sacct_disabled.stderr.txt").read_text()
TIME_ENV = "SLURM_TIME_FORMAT=%s"  # every Slurm status command asks for epoch seconds
GIDS = {
    "1755": "2b7bce65-1db8-4784-bf4f-4bda412e955b",  # completed, then cancelled: exit 0 stands
    "1756": "fa12ce99-ea54-4295-ab46-2d78ba3111db",  # failed with 7
    "1757": "147270c8-e370-4bfd-9019-9ed8f85e9bbc",  # cancelled through us before it started
    "99": "00000000-0000-4000-8000-000000000000",  # no trace anywhere
    "1758": "8ab87c1c-8644-4928-9c56-6de0b476011d",  # running
    "1762": "33333333-3333-4333-8333-333333333333",  # failed, still in squeue with its code
}


class RecordedSlurm(SlurmAdapter):
    """A SlurmAdapter whose remote commands answer with recorded output."""

    def __init__(self, squeue: str, squeue_exit: int = 0) -> None:
        target = SSHTarget(
            "centera", "127.0.0.1", 22201, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",)
        )
        super().__init__(target, SSHPool())
        self.squeue, self.squeue_exit = squeue, squeue_exit
        self.commands: list[tuple[str, bytes | None]] = []

    async def root(self) -> str:
        return "/home/alice/.hpcfed"

    async def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        self.remote_commands += 1
        self.commands.append((command, stdin))
        if command.startswith(f"{TIME_ENV} squeue"):
            return CommandResult(self.squeue_exit, self.squeue.encode(), b"")
        out = MARKERS
        if command.startswith(f"{{ {TIME_ENV} sacct"):
            out = f"{SEPARATOR}\n{MARKERS}"
            return CommandResult(123, out.encode(), SACCT_OFF.encode())
        return CommandResult(123, out.encode(), b"")


def without(text: str, *ids: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.split("|")[0] not in ids)


async def test_fifty_running_jobs_cost_one_command() -> None:
    rows = "".join(f"{1000 + i}|RUNNING|None|0|1796146595|1796150195|hpcfed:x\n" for i in range(50))
    adapter = RecordedSlurm(rows)
    jobs = {str(1000 + i): f"{i:08d}-0000-4000-8000-000000000000" for i in range(50)}
    statuses = await adapter.status_many(jobs)
    assert adapter.remote_commands == 1
    assert {s.state for s in statuses.values()} == {JobState.RUNNING}
    assert {(s.started_at, s.ended_at) for s in statuses.values()} == {(1796146595.0, None)}
    assert len(statuses) == 50


async def test_jobs_gone_from_squeue_are_settled_in_one_more_command() -> None:
    adapter = RecordedSlurm(without(SQUEUE, "1755", "1756", "1757"))
    statuses = await adapter.status_many(GIDS)
    assert adapter.remote_commands == 2
    final_command, stdin = adapter.commands[1]
    assert final_command.startswith(f"{{ {TIME_ENV} sacct -X --parsable2 --noheader")
    assert "-j 1755,1756,1757,99 " in final_command  # only the ones squeue no longer knows
    assert stdin is not None and GIDS["99"].encode() in stdin
    assert GIDS["1758"].encode() not in stdin  # running: its files are not read every tick
    got = {nid: (s.state, s.exit_code) for nid, s in statuses.items()}
    assert got == {
        "1755": (JobState.COMPLETED, 0),
        "1756": (JobState.FAILED, 7),
        "1757": (JobState.CANCELLED, None),
        "99": (JobState.UNKNOWN, None),  # gone, and nothing says it ended: not ended
        "1758": (JobState.RUNNING, None),
        "1762": (JobState.FAILED, 3),
    }
    assert statuses["99"].unlisted and "records no end" in (statuses["99"].reason or "")
    ran = {nid: (s.started_at, s.ended_at) for nid, s in statuses.items()}
    assert ran == {
        "1755": (1796146595.509070, 1796146595.525094),  # job.sh's times, from its directory
        "1756": (1796146595.495619, 1796146595.504129),
        "1757": (None, None),  # cancelled before it started, and gone from squeue
        "99": (None, None),
        "1758": (1796146595.0, None),  # squeue's, without reading its files
        "1762": (1796146595.0, 1796146595.0),
    }


async def test_an_ended_job_squeue_gives_times_for_costs_one_command() -> None:
    adapter = RecordedSlurm(SQUEUE)
    jobs = {"1755": GIDS["1755"], "1761": "44444444-4444-4444-8444-444444444444"}
    statuses = await adapter.status_many(jobs)
    assert adapter.remote_commands == 1
    assert (statuses["1761"].started_at, statuses["1761"].ended_at) == (
        1796146595.0,
        1796146596.0,
    )


async def test_an_ended_job_the_scheduler_gives_no_end_for_is_timed_by_its_files() -> None:
    # As a scheduler front end that prints no times would list it.
    untimed = "1755|COMPLETED|None|0|N/A|N/A|hpcfed:x\n"
    adapter = RecordedSlurm(untimed)
    status = (await adapter.status_many({"1755": GIDS["1755"]}))["1755"]
    assert adapter.remote_commands == 2  # squeue, then the job directory
    assert (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    assert (status.started_at, status.ended_at) == (1796146595.509070, 1796146595.525094)


async def test_disabled_accounting_is_not_asked_again_every_tick() -> None:
    adapter = RecordedSlurm(without(SQUEUE, "1755"))
    await adapter.status_many({"1755": GIDS["1755"]})
    await adapter.status_many({"1755": GIDS["1755"]})
    finals = [c for c, _ in adapter.commands if not c.startswith(f"{TIME_ENV} squeue")]
    assert finals[0].startswith(f"{{ {TIME_ENV} sacct") and "sacct" not in finals[1]
    assert finals[1].startswith("cd /home/alice/.hpcfed/jobs && xargs -r sh -c 'find ")


async def test_a_failing_squeue_is_an_unavailable_center_not_vanished_jobs() -> None:
    adapter = RecordedSlurm("", squeue_exit=1)
    with pytest.raises(CenterUnavailable, match="squeue failed"):
        await adapter.status_many(GIDS)
    assert adapter.remote_commands == 1


async def test_ids_that_are_not_slurm_ids_are_left_out_without_a_command() -> None:
    adapter = RecordedSlurm(SQUEUE)
    assert await adapter.status_many({"1; rm -rf ~": GIDS["1755"], "1758": "not-a-uuid"}) == {}
    assert adapter.remote_commands == 0
