"""The four centers of the testbed: fixed ids, ports, node names and shapes.

Other code (fixtures, benchmarks, docs) relies on these values; change them only together.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

DAEMONS: tuple[str, ...] = ("slurmctld", "slurmd", "sshd")
#: The accounting center's own daemons, started before its slurmctld.
ACCOUNTING_DAEMONS: tuple[str, ...] = ("mariadbd", "slurmdbd")
USERS: tuple[str, ...] = ("alice", "bob")
#: The SSH login the gateway's center files use.
GATEWAY_LOGIN = "alice"
#: Job users with the chatty login environments real centers give (tests/testbed/loginenv.py):
#: carol's .bashrc and .profile print banners, dave's login shell is tcsh. At the centers
#: without accounting.
LOGIN_ENV_USERS: tuple[str, ...] = ("carol", "dave")
#: A login of the accounting center only, with no association there.
NO_ASSOCIATION_USER = "dora"


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
    #: slurmdbd's and MariaDB's loopback ports; None: the center has no accounting.
    dbd_port: int | None = None
    db_port: int | None = None
    #: Logins that exist at this center (user, key, sshd) but have no association in
    #: its accounting: what a center does to a user it never granted an account.
    unassociated: tuple[str, ...] = ()

    @property
    def accounting(self) -> bool:
        return self.dbd_port is not None

    @property
    def daemons(self) -> tuple[str, ...]:
        """Every daemon of the center, in start order."""
        return (ACCOUNTING_DAEMONS if self.accounting else ()) + DAEMONS

    @property
    def logins(self) -> tuple[str, ...]:
        """The Unix users that may log in here."""
        return USERS + (() if self.accounting else LOGIN_ENV_USERS) + self.unassociated

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
    dbd_port: int | None = None
    db_port: int | None = None
    unassociated: tuple[str, ...] = ()


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
    # Slurm with slurmdbd on MariaDB and enforced associations, limits and QoS
    # (tests/testbed/accounting.py holds its accounts). 4 CPUs: more than the
    # `physics` account's GrpTRES=cpu=2, so a job can fit the node but not the account.
    "centerd": _Shape(
        kind="slurm",
        ssh_port=22204,
        slurmctld_port=16847,
        slurmd_port=16848,
        node="noded",
        partitions=("normal",),
        cpus=4,
        memory_mib=8192,
        gpus=0,
        gpu_type=None,
        name="Center D (Slurm with accounting)",
        region="west",
        # Finished jobs leave squeue fast: sacct is then the scheduler's final record.
        min_job_age=2,
        dbd_port=16849,
        db_port=16850,
        unassociated=(NO_ASSOCIATION_USER,),
    ),
}

CENTER_IDS: tuple[str, ...] = tuple(_SHAPES)
#: The centers without accounting, all alike in how they treat users (benchmarks and
#: tests that compare "every center" use these).
PLAIN_CENTER_IDS: tuple[str, ...] = tuple(c for c, s in _SHAPES.items() if s.dbd_port is None)
ACCOUNTING_CENTER_IDS: tuple[str, ...] = tuple(
    c for c, s in _SHAPES.items() if s.dbd_port is not None
)
#: Every Unix user the testbed creates.
ALL_LOGINS: tuple[str, ...] = (
    USERS + LOGIN_ENV_USERS + tuple(sorted({u for s in _SHAPES.values() for u in s.unassociated}))
)


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
            dbd_port=shape.dbd_port,
            db_port=shape.db_port,
            unassociated=shape.unassociated,
        )
    return centers
