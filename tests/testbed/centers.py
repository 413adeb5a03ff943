"""The three centers of the testbed: fixed ids, ports, node names and shapes.

Other code (fixtures, benchmarks, docs) relies on these values; change them only together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DAEMONS: tuple[str, ...] = ("slurmctld", "slurmd", "sshd")
USERS: tuple[str, ...] = ("alice", "bob")
#: The SSH login the gateway's center files use.
GATEWAY_LOGIN = "alice"


@dataclass(frozen=True)
class CenterInfo:
    """One center as tests see it. `dir` holds its configs, logs, state and host key."""

    id: str
    kind: Literal["slurm", "pbs"]
    dir: Path
    ssh_port: int
    slurm_conf: Path
    node: str
    partitions: tuple[str, ...]  # the first one is the default partition (queue)
    gpus: int
    gpu_type: str | None
    cpus: int
    memory_mib: int
    slurmctld_port: int
    slurmd_port: int
    name: str
    region: str
    min_job_age: int  # seconds a finished job stays visible to squeue/scontrol

    @property
    def host_key_file(self) -> Path:
        """The private host key; the pinned public half is `host_key_file` + '.pub'."""
        return self.dir / "host_ed25519"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    def pidfile(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.pid"

    def logfile(self, daemon: str) -> Path:
        return self.dir / f"{daemon}.log"

    def launch_log(self, daemon: str) -> Path:
        """What a daemon printed before it had its own log open (bad config, busy port)."""
        return self.dir / f"{daemon}.out"


@dataclass(frozen=True)
class _Shape:
    kind: Literal["slurm", "pbs"]
    ssh_port: int
    slurmctld_port: int
    slurmd_port: int
    node: str
    partitions: tuple[str, ...]
    cpus: int
    memory_mib: int
    gpus: int
    gpu_type: str | None
    name: str
    region: str
    # centerb forgets finished jobs fast, as centers that purge aggressively do:
    # the gateway must still learn their final state (from the job directory).
    min_job_age: int = 300


# CPUs are declared beyond the machine's cores (slurmd accepts that with
# SlurmdParameters=config_overrides) so several small test jobs run side by side.
# Memory is not a consumable resource here (CR_Core), RealMemory only caps --mem requests.
_SHAPES: dict[str, _Shape] = {
    "centera": _Shape(
        kind="slurm",
        ssh_port=22201,
        slurmctld_port=16817,
        slurmd_port=16818,
        node="nodea",
        partitions=("debug", "long"),
        cpus=8,
        memory_mib=16384,
        gpus=0,
        gpu_type=None,
        name="Center A (Slurm, CPU)",
        region="north",
    ),
    "centerb": _Shape(
        kind="slurm",
        ssh_port=22202,
        slurmctld_port=16827,
        slurmd_port=16828,
        node="nodeb",
        partitions=("gpu",),
        cpus=8,
        memory_mib=32768,
        gpus=4,
        gpu_type="a100",
        name="Center B (Slurm, GPU)",
        region="south",
        min_job_age=2,
    ),
    "centerc": _Shape(
        kind="pbs",
        ssh_port=22203,
        slurmctld_port=16837,
        slurmd_port=16838,
        node="nodec",
        partitions=("batch",),
        cpus=4,
        memory_mib=8192,
        gpus=0,
        gpu_type=None,
        name="Center C (PBS, Torque dialect)",
        region="east",
    ),
}

CENTER_IDS: tuple[str, ...] = tuple(_SHAPES)


def make_centers(base: Path) -> dict[str, CenterInfo]:
    centers = {}
    for cid, shape in _SHAPES.items():
        cdir = base / cid
        centers[cid] = CenterInfo(
            id=cid,
            kind=shape.kind,
            dir=cdir,
            ssh_port=shape.ssh_port,
            slurm_conf=cdir / "slurm.conf",
            node=shape.node,
            partitions=shape.partitions,
            gpus=shape.gpus,
            gpu_type=shape.gpu_type,
            cpus=shape.cpus,
            memory_mib=shape.memory_mib,
            slurmctld_port=shape.slurmctld_port,
            slurmd_port=shape.slurmd_port,
            name=shape.name,
            region=shape.region,
            min_job_age=shape.min_job_age,
        )
    return centers
