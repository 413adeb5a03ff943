"""status_many's flow over recorded outputs: at most two commands a tick, final states
learned from the job directory once a job has left squeue."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import CenterUnavailable, JobState
from adapters.markers import SEPARATOR
from adapters.slurm import SlurmAdapter
from adapters.ssh import CommandResult, SSHPool, SSHTarget
from adapters.sshkeys import KeyFile

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SQUEUE = (FIXTURES / "slurm" / "squeue_mixed.txt").read_text()
MARKERS = (FIXTURES / "jobdir" / "markers.txt").read_text()
SACCT_OFF = (FIXTURES / "slurm" / "sacct_disabled.stderr.txt").read_text()
GIDS = {
    "10": "e97dc3b2-f892-4298-a577-babdffe073ca",  # completed, then cancelled: exit 0 stands
    "11": "2490d85f-a475-4d40-aaaf-f1b4c977af36",  # failed with 7
    "12": "ca05de7a-0e52-4d49-8ddb-e447b4ba3cd4",  # cancelled through us
    "99": "00000000-0000-4000-8000-000000000000",  # no trace anywhere
    "13": "11111111-1111-4111-8111-111111111111",  # running
    "17": "33333333-3333-4333-8333-333333333333",  # failed, still in squeue with its code
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
        if command.startswith("squeue"):
            return CommandResult(self.squeue_exit, self.squeue.encode(), b"")
        out = MARKERS
        if command.startswith("{ sacct"):
            out = f"{SEPARATOR}\n{MARKERS}"
            return CommandResult(123, out.encode(), SACCT_OFF.encode())
        return CommandResult(123, out.encode(), b"")


def without(text: str, *ids: str) -> str:
    return "".join(line + "\n" for line in text.splitlines() if line.split("|")[0] not in ids)


async def test_fifty_running_jobs_cost_one_command() -> None:
    rows = "".join(f"{1000 + i}|RUNNING|None|0|hpcfed:x\n" for i in range(50))
    adapter = RecordedSlurm(rows)
    jobs = {str(1000 + i): f"{i:08d}-0000-4000-8000-000000000000" for i in range(50)}
    statuses = await adapter.status_many(jobs)
    assert adapter.remote_commands == 1
    assert {s.state for s in statuses.values()} == {JobState.RUNNING}
    assert len(statuses) == 50


async def test_jobs_gone_from_squeue_are_settled_in_one_more_command() -> None:
    adapter = RecordedSlurm(without(SQUEUE, "10", "11", "12"))
    statuses = await adapter.status_many(GIDS)
    assert adapter.remote_commands == 2
    final_command, stdin = adapter.commands[1]
    assert final_command.startswith("{ sacct -X --parsable2 --noheader")
    assert "-j 10,11,12,99 " in final_command  # only the ones squeue no longer knows
    assert stdin is not None and GIDS["99"].encode() in stdin and GIDS["13"].encode() not in stdin
    got = {nid: (s.state, s.exit_code) for nid, s in statuses.items()}
    assert got == {
        "10": (JobState.COMPLETED, 0),
        "11": (JobState.FAILED, 7),
        "12": (JobState.CANCELLED, None),
        "99": (JobState.FAILED, None),
        "13": (JobState.RUNNING, None),
        "17": (JobState.FAILED, 3),
    }
    assert "without an exit status" in (statuses["99"].reason or "")


async def test_disabled_accounting_is_not_asked_again_every_tick() -> None:
    adapter = RecordedSlurm(without(SQUEUE, "10"))
    await adapter.status_many({"10": GIDS["10"]})
    await adapter.status_many({"10": GIDS["10"]})
    finals = [c for c, _ in adapter.commands if not c.startswith("squeue")]
    assert finals[0].startswith("{ sacct") and "sacct" not in finals[1]
    assert finals[1].startswith("cd /home/alice/.hpcfed/jobs && xargs -r sh -c 'find ")


async def test_a_failing_squeue_is_an_unavailable_center_not_vanished_jobs() -> None:
    adapter = RecordedSlurm("", squeue_exit=1)
    with pytest.raises(CenterUnavailable, match="squeue failed"):
        await adapter.status_many(GIDS)
    assert adapter.remote_commands == 1


async def test_ids_that_are_not_slurm_ids_are_left_out_without_a_command() -> None:
    adapter = RecordedSlurm(SQUEUE)
    assert await adapter.status_many({"1; rm -rf ~": GIDS["10"], "13": "not-a-uuid"}) == {}
    assert adapter.remote_commands == 0
