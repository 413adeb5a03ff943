"""A Slurm center's load: the one command, and its parser over output recorded on the
testbed (tests/fixtures/slurm/load-centera-*, load-centerb-*) and written odd cases
(load-odd-nodes.txt, load-waits.txt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import GpuLoad, PartitionLoad
from adapters.batch.load import gpus_by_model, split_gres
from adapters.batch.markers import SEPARATOR
from adapters.errors import CommandFailed
from adapters.slurm.adapter import SlurmAdapter
from adapters.slurm.load import build_load_command, node_condition, parse_load, slurm_duration
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def partitions(name: str) -> dict[str, PartitionLoad]:
    return {p.name: p for p in parse_load(fixture(name), 1.0).partitions}


def nodes(p: PartitionLoad) -> tuple[int, int, int, int]:
    return (p.nodes_total, p.nodes_idle, p.nodes_allocated, p.nodes_down)


def cores(p: PartitionLoad) -> tuple[int, int, int, int]:
    return (p.cores_total, p.cores_idle, p.cores_allocated, p.cores_down)


# ------------------------------------------------------------ the command


def test_command_is_one_line_of_machine_readable_parts() -> None:
    command = build_load_command()
    assert "\n" not in command
    assert command.count(f"echo {SEPARATOR}") == 2
    assert " -h -N " in command and " -O " in command  # sinfo: per node, no header
    assert "squeue -h -t PENDING,RUNNING -o " in command
    assert "SLURM_TIME_FORMAT=%s squeue" in command  # epoch seconds, no time zone guessing
    assert " -u " not in command  # every user's jobs
    assert command.count(" && ") == 4  # a failing part fails the whole


# ------------------------------------------------------------ small parsers


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("infinite", None),
        ("UNLIMITED", None),
        ("1-00:00:00", 86400),
        ("7-00:00:00", 604800),
        ("1:00:00", 3600),
        ("30:00", 1800),
        ("30", 1800),  # bare minutes
        ("2-12", 216000),  # days-hours
        ("1-02:30", 95400),  # days-hours:minutes
        ("00:00:45", 45),
    ],
)
def test_slurm_time_limits(text: str, seconds: int | None) -> None:
    assert slurm_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "1-2-3", "1:2:3:4", "x-01:00"])
def test_unreadable_time_limit_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        slurm_duration(text)


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:a100:4", {"a100": 4}),
        ("gpu:a100:4(S:0-1)", {"a100": 4}),
        ("gpu:4", {"gpu": 4}),
        ("gpu:4(S:0)", {"gpu": 4}),
        ("gpu:a100:2(IDX:0-1)", {"a100": 2}),
        ("gpu:a100:0(IDX:N/A)", {"a100": 0}),
        ("gpu:(null):1(IDX:0)", {"gpu": 1}),  # GresUsed of untyped GPUs bound to devices
        ("gpu:h100:2(S:0),gpu:l40s:4(S:0,1),mps:400", {"h100": 2, "l40s": 4}),
        ("gpu:a100:1(IDX:0),gpu:a100:1(IDX:2)", {"a100": 2}),
        ("(null)", {}),
        ("mps:100,shard:8", {}),
        ("gpumem:16", {}),
    ],
)
def test_gpus_by_model_from_gres(gres: str, gpus: dict[str, int]) -> None:
    assert gpus_by_model(gres) == gpus


def test_gres_commas_inside_parentheses_stay() -> None:
    assert split_gres("gpu:a:2(S:0,1),gpu:b:1(IDX:0,2),(null)") == [
        "gpu:a:2(S:0,1)",
        "gpu:b:1(IDX:0,2)",
    ]


@pytest.mark.parametrize(
    ("state", "condition"),
    [
        ("idle", "idle"),
        ("idle+powered_down", "idle"),  # woken for a job
        ("mixed", "allocated"),
        ("allocated", "allocated"),
        ("idle+completing", "allocated"),
        ("idle+reserved", "allocated"),
        ("idle+drain", "down"),  # drained
        ("mixed+drain", "down"),  # draining: takes no new job
        ("allocated+fail", "down"),  # failing
        ("down+not_responding", "down"),
        ("idle+not_responding", "down"),
        ("future", "down"),
        ("unknown", "down"),
        ("something_new", "down"),  # not known: not usable
    ],
)
def test_node_states(state: str, condition: str) -> None:
    assert node_condition(state) == condition


# ------------------------------------------------------------ recorded on the testbed


def test_idle_gpu_center_recorded_on_centerb() -> None:
    load = parse_load(fixture("load-centerb-idle.txt"), 123.0)
    (gpu,) = load.partitions
    assert (gpu.name, gpu.default, gpu.available) == ("gpu", True, True)
    assert nodes(gpu) == (1, 1, 0, 0)
    assert cores(gpu) == (8, 8, 0, 0)
    assert (gpu.cores_per_node, gpu.memory_per_node_mib) == (8, 32768)
    assert (gpu.max_walltime_seconds, gpu.max_nodes_per_job) == (86400, None)
    assert gpu.gpus == (GpuLoad("a100", total=4, allocated=0, per_node=4),)
    assert (gpu.jobs_queued, gpu.jobs_running, gpu.estimated_wait_seconds) == (0, 0, 0.0)
    assert (load.queried_at, load.jobs_queued, load.jobs_running) == (123.0, 0, 0)


@pytest.mark.parametrize(
    ("name", "wait"),
    [
        # right after submission: the scheduler has not estimated the pending job yet
        ("load-centerb-busy-no-estimate.txt", None),
        # then: the latest expected start of the jobs ahead (an array's, 458 s away)
        ("load-centerb-busy-estimated.txt", 458.0),
    ],
)
def test_gpu_job_running_with_jobs_pending_on_centerb(name: str, wait: float | None) -> None:
    # A job holding gpu:a100:2 and 2 CPUs runs; an 8-CPU job and a 4-element array of
    # them wait for resources, and a held job waits for its user.
    load = parse_load(fixture(name), 1.0)
    (gpu,) = load.partitions
    assert nodes(gpu) == (1, 0, 1, 0)
    assert cores(gpu) == (8, 6, 2, 0)
    assert gpu.gpus == (GpuLoad("a100", total=4, allocated=2, per_node=4),)
    assert (gpu.jobs_queued, gpu.jobs_running) == (6, 1)  # 1 + 4 elements + 1 held
    assert gpu.estimated_wait_seconds == wait
    assert (load.jobs_queued, load.jobs_running) == (6, 1)


def test_two_partitions_over_one_node_recorded_on_centera() -> None:
    load = parse_load(fixture("load-centera-live.txt"), 1.0)
    debug, long = load.partitions
    assert (debug.name, debug.default, long.name, long.default) == ("debug", True, "long", False)
    assert (debug.max_walltime_seconds, long.max_walltime_seconds) == (3600, 604800)
    assert cores(debug) == cores(long) == (8, 6, 2, 0)
    assert debug.memory_per_node_mib == long.memory_per_node_mib == 16384
    # Pending jobs wait for a begin time and for their user: none stands ahead.
    assert (debug.jobs_queued, debug.jobs_running, debug.estimated_wait_seconds) == (2, 2, 0.0)
    assert load.totals is not None
    assert (load.totals.nodes_total, load.totals.cores_total) == (1, 8)  # the node once


# ------------------------------------------------------------ written odd cases


@pytest.mark.parametrize(
    ("name", "node_counts", "core_counts", "walltime", "max_nodes", "jobs", "wait"),
    [
        # drained, draining, down, not responding, reserved; 10 pending array elements
        ("cpu", (8, 1, 3, 4), (256, 84, 52, 120), None, 64, (13, 2), 2400.0),
        ("long", (2, 1, 1, 0), (64, 52, 12, 0), 14 * 86400, 4, (1, 1), 2400.0),
        ("gpu", (4, 1, 3, 0), (240, 210, 30, 0), 2 * 86400, 8, (4, 3), 300.0),
        ("viz", (1, 1, 0, 0), (16, 16, 0, 0), 1800, None, (0, 0), None),  # inactive
    ],
)
def test_odd_nodes(
    name: str,
    node_counts: tuple[int, int, int, int],
    core_counts: tuple[int, int, int, int],
    walltime: int | None,
    max_nodes: int | None,
    jobs: tuple[int, int],
    wait: float | None,
) -> None:
    p = partitions("load-odd-nodes.txt")[name]
    assert nodes(p) == node_counts
    assert cores(p) == core_counts
    assert (p.max_walltime_seconds, p.max_nodes_per_job) == (walltime, max_nodes)
    assert (p.jobs_queued, p.jobs_running) == jobs
    assert p.estimated_wait_seconds == wait
    assert p.available is (name != "viz")
    assert p.default is (name == "cpu")


def test_gpus_by_model_typed_untyped_and_mixed_nodes() -> None:
    found = partitions("load-odd-nodes.txt")
    assert found["gpu"].gpus == (
        GpuLoad("a100", total=8, allocated=3, per_node=4),
        GpuLoad("gpu", total=2, allocated=1, per_node=2),  # untyped
        GpuLoad("h100", total=2, allocated=2, per_node=2),
        GpuLoad("l40s", total=4, allocated=1, per_node=4),
    )
    assert found["viz"].gpus == (GpuLoad("gpu", total=2, allocated=0, per_node=2),)
    assert found["cpu"].gpus == ()
    assert (found["gpu"].cores_per_node, found["gpu"].memory_per_node_mib) == (64, 512000)


def test_center_totals_count_each_node_once() -> None:
    load = parse_load(fixture("load-odd-nodes.txt"), 1.0)
    totals = load.totals
    assert totals is not None
    # c01 and c02 are in "cpu" and "long": summing partitions would count them twice.
    assert sum(p.nodes_total for p in load.partitions) == 15
    assert (totals.nodes_total, totals.nodes_idle, totals.nodes_allocated, totals.nodes_down) == (
        13,
        3,
        6,
        4,
    )
    assert (totals.cores_total, totals.cores_idle, totals.cores_allocated) == (512, 310, 82)
    assert totals.cores_down == 120
    assert GpuLoad("gpu", total=4, allocated=1, per_node=2) in totals.gpus
    # A job pending in two partitions counts once; one in a hidden partition counts too.
    assert (load.jobs_queued, load.jobs_running) == (18, 6)


@pytest.mark.parametrize(
    ("name", "wait", "walltime", "jobs"),
    [
        ("full", 300.0, None, (0, 2)),  # no idle core: the first running job's end
        ("heldonly", 0.0, 3600, (2, 0)),  # held and dependent jobs stand ahead of no one
        ("noestimate", None, 1800, (1, 0)),  # a job ahead, not estimated yet
        ("stale", 0.0, 129600, (1, 1)),  # an expected start already past
        ("forever", None, None, (0, 1)),  # full, and its job has no end
        ("closed", None, None, (1, 0)),  # partition down
        ("draining", None, None, (0, 0)),  # partition drain: takes no job
    ],
)
def test_estimated_waits(
    name: str, wait: float | None, walltime: int | None, jobs: tuple[int, int]
) -> None:
    p = partitions("load-waits.txt")[name]
    assert p.estimated_wait_seconds == wait
    assert p.max_walltime_seconds == walltime
    assert (p.jobs_queued, p.jobs_running) == jobs


def test_waits_count_on_the_centers_clock_not_the_gateways() -> None:
    # The center's `date +%s` says 1700000000; the gateway's clock is an hour ahead.
    p = {q.name: q for q in parse_load(fixture("load-waits.txt"), 1700003600.0).partitions}
    assert p["full"].estimated_wait_seconds == 300.0


def test_empty_listing_is_an_empty_center() -> None:
    load = parse_load(f"1700000000\n{SEPARATOR}\n{SEPARATOR}\n", 5.0)
    assert (load.partitions, load.jobs_queued, load.jobs_running) == ((), 0, 0)


# ------------------------------------------------------------ through the adapter


class Replay(SlurmAdapter):
    """Answers the load command with a recorded exchange."""

    recorded: dict

    async def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        assert command == self.recorded["command"]
        self.remote_commands += 1
        r = self.recorded
        return CommandResult(r["exit_status"], r["stdout"].encode(), r["stderr"].encode())


def replay(recorded: dict) -> Replay:
    target = SSHTarget("centera", "127.0.0.1", 22201, "alice", KeyFile("/k"), ("ssh-ed25519 A",))
    adapter = Replay(target, SSHPool())
    adapter.recorded = recorded
    return adapter


async def test_load_through_the_adapter_costs_one_command() -> None:
    recorded = {
        "command": build_load_command(),
        "exit_status": 0,
        "stdout": fixture("load-centerb-idle.txt"),
        "stderr": "",
    }
    adapter = replay(recorded)
    load = await adapter.load()
    assert adapter.remote_commands == 1
    assert [p.name for p in load.partitions] == ["gpu"]


async def test_stopped_controller_raises_with_the_schedulers_message() -> None:
    recorded = json.loads(fixture("load-controller-down.json"))
    adapter = replay(recorded)
    with pytest.raises(CommandFailed) as caught:
        await adapter.load()
    error = caught.value
    assert error.exit_status == 1
    assert "Unable to contact slurm controller" in error.stderr
    assert error.stderr.strip() in error.message
    assert (error.center, error.command) == ("centera", recorded["command"])
    assert adapter.remote_commands == 1
