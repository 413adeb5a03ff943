"""A PBS center's load in both dialects: the one command, and its parser over output
recorded on the testbed through Slurm's Torque-compatible commands
(tests/fixtures/pbs/load-torque_slurm_*), and written after Torque's and PBS Pro's
formats (load-torque_server.txt, load-pbspro_server.txt, load-torque_slurm_odd.txt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import CenterLoad, GpuLoad, PartitionLoad
from adapters.batch.markers import SEPARATOR
from adapters.errors import CommandFailed
from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.load import build_load_command, parse_load
from adapters.pbs.values import node_condition, node_states, pbs_duration, pbs_size_mib
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pbs"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def load_of(name: str, dialect: str, default_queue: str | None = None) -> CenterLoad:
    return parse_load(fixture(name), 1.0, dialect, default_queue)


def queues(name: str, dialect: str) -> dict[str, PartitionLoad]:
    return {p.name: p for p in load_of(name, dialect).partitions}


def nodes(p: PartitionLoad) -> tuple[int, int, int, int]:
    return (p.nodes_total, p.nodes_idle, p.nodes_allocated, p.nodes_down)


def cores(p: PartitionLoad) -> tuple[int, int, int, int]:
    return (p.cores_total, p.cores_idle, p.cores_allocated, p.cores_down)


# ------------------------------------------------------------ the commands


@pytest.mark.parametrize(
    ("dialect", "parts"),
    [
        ("torque", ("pbsnodes -a", "qstat -Q -f", "qstat -q", "qstat -B -f", "qstat -f")),
        ("pbspro", ("pbsnodes -a -F json", "qstat -Q -f -F json", "qstat -B -f -F json")),
    ],
)
def test_command_is_one_line_of_parts_that_fail_together(
    dialect: str, parts: tuple[str, ...]
) -> None:
    command = build_load_command(dialect)
    assert "\n" not in command
    assert command.count(f"echo {SEPARATOR}") == len(parts) - 1
    for part in parts:
        assert part in command
    assert " ; " not in command and "; echo" not in command  # parts joined with &&


def test_unknown_dialect_is_refused() -> None:
    with pytest.raises(ValueError):
        build_load_command("lsf")


# ------------------------------------------------------------ small parsers


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("48:00:00", 172800),
        ("336:00:00", 1209600),
        ("1:00:00:00", 86400),  # DD:HH:MM:SS
        ("30:00", 1800),
        ("3600", 3600),
        (3600, 3600),
        ("--", None),  # qstat -q: no limit
        ("", None),
        ("soon", None),
    ],
)
def test_pbs_walltimes(value: object, seconds: int | None) -> None:
    assert pbs_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "mib"),
    [
        ("8192mb", 8192),
        ("263842644kb", 257658),
        ("64gb", 65536),
        ("1tb", 1048576),
        ("1048576", 1),  # bytes
        ("2mw", 16),  # words of 8 bytes
        ("", 0),
    ],
)
def test_pbs_sizes(value: str, mib: int) -> None:
    assert pbs_size_mib(value) == mib


@pytest.mark.parametrize(
    ("state", "condition"),
    [
        ("free", "idle"),
        ("free~", "idle"),  # wrapper: powered down, woken for a job
        ("sleep", "idle"),
        ("job-exclusive", "allocated"),
        ("job-busy", "allocated"),
        ("busy", "allocated"),
        ("mixed", "allocated"),  # wrapper
        ("resv-exclusive", "allocated"),
        ("down", "down"),
        ("offline", "down"),
        ("down,offline", "down"),
        ("job-exclusive,offline", "down"),
        ("draining", "down"),  # wrapper: runs its jobs, takes no new one
        ("state-unknown", "down"),
        ("stale", "down"),
        ("something-new", "down"),
    ],
)
def test_node_states(state: str, condition: str) -> None:
    assert node_condition(node_states(state)) == condition


# ------------------------------------------------------------ Slurm's Torque wrapper, recorded


def test_idle_queue_recorded_on_centerc() -> None:
    load = load_of("load-torque_slurm_idle.txt", "torque")
    (batch,) = load.partitions
    assert (batch.name, batch.default, batch.available) == ("batch", True, True)
    assert nodes(batch) == (1, 1, 0, 0)
    assert cores(batch) == (4, 4, 0, 0)
    assert (batch.cores_per_node, batch.memory_per_node_mib) == (4, 8192)
    assert (batch.max_walltime_seconds, batch.max_nodes_per_job) == (172800, None)
    assert (batch.jobs_queued, batch.jobs_running) == (0, 0)
    assert batch.estimated_wait_seconds is None  # Torque gives no estimate
    assert batch.gpus == ()


def test_partly_used_node_recorded_on_centerc() -> None:
    # A 2-CPU job runs on the 4-CPU node ("mixed"); a 4-CPU job and a held one wait.
    load = load_of("load-torque_slurm_busy.txt", "torque")
    (batch,) = load.partitions
    assert nodes(batch) == (1, 0, 1, 0)
    assert cores(batch) == (4, 2, 2, 0)  # from the running job's exec_host "nodec/2"
    assert (batch.jobs_queued, batch.jobs_running) == (2, 1)
    assert (load.jobs_queued, load.jobs_running) == (2, 1)


def test_wrapper_odd_states_gres_and_multi_node_jobs() -> None:
    load = load_of("load-torque_slurm_odd.txt", "torque")
    debug, gpu = load.partitions
    # A Torque queue reports every node of the server.
    assert nodes(debug) == nodes(gpu) == (8, 2, 3, 3)
    # n2 whole, n3 (draining) 4 and g1 8+4 from exec_host, g2 "mixed" unlisted: all 16.
    assert cores(debug) == (96, 36, 40, 20)
    assert gpu.gpus == (
        GpuLoad("a100", total=2, allocated=2, per_node=2),  # the wrapper's status gres
        GpuLoad("gpu", total=4, allocated=4, per_node=4),
        GpuLoad("v100", total=2, allocated=2, per_node=2),
    )
    assert (debug.max_walltime_seconds, gpu.max_walltime_seconds) == (3600, 86400)
    assert (debug.max_nodes_per_job, gpu.max_nodes_per_job) == (None, 4)
    assert ((debug.jobs_queued, debug.jobs_running), (gpu.jobs_queued, gpu.jobs_running)) == (
        (1, 1),
        (0, 1),
    )
    assert not debug.default and not gpu.default  # two queues, and no server default


def test_configured_default_queue_marks_it_when_the_server_names_none() -> None:
    load = load_of("load-torque_slurm_odd.txt", "torque", default_queue="gpu")
    assert [(p.name, p.default) for p in load.partitions] == [("debug", False), ("gpu", True)]


# ------------------------------------------------------------ a real Torque server, written


def test_torque_server_queues() -> None:
    found = queues("load-torque_server.txt", "torque")
    assert set(found) == {"batch", "long-running-jobs-q"}  # the routing queue runs nothing
    batch, long = found["batch"], found["long-running-jobs-q"]
    assert (batch.default, batch.available) == (True, True)  # the server's default_queue
    assert (long.default, long.available) == (False, False)  # started = False
    assert (batch.max_walltime_seconds, batch.max_nodes_per_job) == (172800, 4)
    # Not in qstat -Q -f: from qstat -q, whose name column stops at 16 characters.
    assert long.max_walltime_seconds == 336 * 3600
    assert (batch.jobs_queued, batch.jobs_running) == (4, 3)  # Queued 3 + Held 1
    assert (long.jobs_queued, long.jobs_running) == (1, 1)
    assert batch.estimated_wait_seconds is None


def test_torque_server_nodes_from_slots_and_gpu_status() -> None:
    batch = queues("load-torque_server.txt", "torque")["batch"]
    # node02 "free" with 5 slots taken is partly allocated; node05 offline runs 2.
    assert nodes(batch) == (6, 1, 3, 2)
    assert cores(batch) == (112, 51, 31, 30)
    assert (batch.cores_per_node, batch.memory_per_node_mib) == (32, 257658)
    assert batch.gpus == (GpuLoad("gpu", total=2, allocated=1, per_node=2),)


# ------------------------------------------------------------ PBS Pro, written


def test_pbspro_queues_and_their_vnodes() -> None:
    load = load_of("load-pbspro_server.txt", "pbspro")
    found = {p.name: p for p in load.partitions}
    assert list(found) == ["workq", "gpuq", "maintq"]  # routeq routes, runs nothing
    workq, gpuq, maintq = found["workq"], found["gpuq"], found["maintq"]
    assert [p.default for p in load.partitions] == [True, False, False]
    assert (workq.available, gpuq.available, maintq.available) == (True, True, False)
    # workq: the vnodes of no queue; cn003 job-exclusive is wholly taken by 1 CPU.
    assert nodes(workq) == (4, 1, 2, 1)
    assert cores(workq) == (256, 96, 96, 64)
    assert (workq.max_walltime_seconds, workq.max_nodes_per_job) == (259200, 2)
    assert (workq.jobs_queued, workq.jobs_running) == (5, 2)  # Queued 3, Held 1, Waiting 1
    assert workq.estimated_wait_seconds is None  # jobs queued; PBS Pro's estimate is per job
    # gpuq: its own vnodes.
    assert nodes(gpuq) == (2, 1, 1, 0)
    assert cores(gpuq) == (96, 48, 48, 0)
    assert gpuq.gpus == (GpuLoad("gpu", total=8, allocated=3, per_node=4),)
    assert (gpuq.memory_per_node_mib, gpuq.max_walltime_seconds) == (515317, 86400)
    assert gpuq.estimated_wait_seconds == 0.0  # nothing queued, a core free
    assert maintq.estimated_wait_seconds is None


def test_pbspro_center_totals_count_each_vnode_once() -> None:
    load = load_of("load-pbspro_server.txt", "pbspro")
    totals = load.totals
    assert totals is not None
    assert (totals.nodes_total, totals.nodes_idle, totals.nodes_allocated, totals.nodes_down) == (
        6,
        2,
        3,
        1,
    )
    assert (totals.cores_total, totals.cores_idle, totals.cores_allocated) == (352, 144, 144)
    assert (load.jobs_queued, load.jobs_running) == (5, 3)


def test_broken_pbspro_json_is_an_error_not_an_empty_center() -> None:
    with pytest.raises(ValueError):
        parse_load('{"nodes": {"cn001": {"state": "free",', 1.0, "pbspro")


# ------------------------------------------------------------ through the adapter


class Replay(PbsAdapter):
    """Answers the load command with a recorded exchange."""

    recorded: dict

    async def run(self, command: str, stdin: bytes | None = None) -> CommandResult:
        assert command == self.recorded["command"]
        self.remote_commands += 1
        r = self.recorded
        return CommandResult(r["exit_status"], r["stdout"].encode(), r["stderr"].encode())


def replay(recorded: dict, dialect: str = "torque") -> Replay:
    target = SSHTarget("centerc", "127.0.0.1", 22203, "alice", KeyFile("/k"), ("ssh-ed25519 A",))
    adapter = Replay(target, SSHPool(), dialect=dialect)
    adapter.recorded = recorded
    return adapter


async def test_load_through_the_adapter_costs_one_command() -> None:
    adapter = replay(
        {
            "command": build_load_command("torque"),
            "exit_status": 0,
            "stdout": fixture("load-torque_slurm_busy.txt"),
            "stderr": "",
        }
    )
    load = await adapter.load()
    assert adapter.remote_commands == 1
    assert [(p.name, p.cores_allocated) for p in load.partitions] == [("batch", 2)]


async def test_stopped_controller_raises_with_the_front_ends_message() -> None:
    recorded = json.loads(fixture("load-torque_slurm_controller_down.json"))
    adapter = replay(recorded)
    with pytest.raises(CommandFailed) as caught:
        await adapter.load()
    error = caught.value
    assert error.exit_status == recorded["exit_status"] != 0
    assert "Problem loading node." in error.stderr
    assert (error.center, error.command) == ("centerc", recorded["command"])


async def test_unreadable_pbspro_output_raises_command_failed() -> None:
    adapter = replay(
        {
            "command": build_load_command("pbspro"),
            "exit_status": 0,
            "stdout": "pbsnodes: Server has no node list\n{",
            "stderr": "",
        },
        dialect="pbspro",
    )
    with pytest.raises(CommandFailed) as caught:
        await adapter.load()
    assert "unreadable pbspro load output" in caught.value.message
