"""The testbed's scientific applications (tests/testbed/apps.py): each center's Lmod
modules load over its sshd as the job users, the binaries they publish answer, and real
batch jobs (sbatch, and the Torque-dialect qsub at centerc) run LAMMPS, GROMACS and HPCC."""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from gateway.centers.config import CenterConfig
from gateway.centers.evaluation.hpl import hpccinf
from tests.testbed import Testbed, apps

pytestmark = pytest.mark.integration

JOB_TIMEOUT = 180.0
#: Printed by every remote script before its own output: what comes before it is what the
#: login's startup files print (dave's .cshrc).
MARK = "---- hpcfed apps test ----"
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}
LAMMPS_BANNER = "Large-scale Atomic/Molecular Massively Parallel Simulator"


def remote_bash(tb: Testbed, cid: str, user: str, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` under bash at `cid` as `user` (whatever the login shell), fed on stdin;
    stdout keeps only what follows MARK."""
    proc = subprocess.run(
        tb.ssh_command(cid, "bash --noprofile --norc -s", user=user),
        input=f"echo '{MARK}'\n{script}",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert MARK in proc.stdout, f"no output from bash at {cid} as {user}: {proc.stderr}"
    proc.stdout = proc.stdout.split(MARK + "\n", 1)[1]
    return proc


def checked(tb: Testbed, cid: str, user: str, script: str) -> str:
    proc = remote_bash(tb, cid, user, script)
    assert proc.returncode == 0, (
        f"at {cid} as {user}, exit {proc.returncode}:\n{script}\n{proc.stdout}{proc.stderr}"
    )
    return proc.stdout


# ------------------------------------------------------------ modules over plain ssh

LOAD_CASES = [
    # center, user, module, executable, what the executable prints
    ("centera", "alice", "lammps/7Jan2022", "lmp", ["-h"], LAMMPS_BANNER),
    ("centera", "dave", "lammps/7Jan2022", "lmp", ["-h"], LAMMPS_BANNER),
    ("centerc", "alice", "LAMMPS/2022.01", "lmp_serial", ["-h"], LAMMPS_BANNER),
    ("centerc", "dave", "LAMMPS/2022.01", "lmp_serial", ["-h"], LAMMPS_BANNER),
    ("centerb", "alice", "gromacs/2022.5", "gmx", ["--version"], "GROMACS version:    2022.5"),
    ("centerb", "dave", "gromacs/2022.5", "gmx", ["--version"], "GROMACS version:    2022.5"),
]


@pytest.mark.parametrize(("cid", "user", "module", "executable", "args", "prints"), LOAD_CASES)
def test_module_puts_the_binary_first_on_path(
    testbed: Testbed,
    cid: str,
    user: str,
    module: str,
    executable: str,
    args: list[str],
    prints: str,
) -> None:
    center = testbed.center(cid)
    script = apps.module_prelude(center, module) + (
        f"command -v {executable}\n{shlex.join([executable, *args])}\n"
    )
    output = checked(testbed, cid, user, script)
    where, _, rest = output.partition("\n")
    assert where == str(apps.bin_dir(center, module) / executable)
    assert prints in rest


@pytest.mark.parametrize("cid", ["centera", "centerb", "centerc", "centerd"])
def test_hpcc_module_at_every_center(testbed: Testbed, cid: str) -> None:
    center = testbed.center(cid)
    script = apps.module_prelude(center, "hpcc/1.5.0") + "command -v hpcc\ncommand -v mpirun\n"
    output = checked(testbed, cid, "alice", script).split()
    assert output == [str(apps.bin_dir(center, "hpcc/1.5.0") / "hpcc"), "/usr/bin/mpirun"]


@pytest.mark.parametrize("user", ["alice", "dave"])
def test_broken_lammps_module_at_centerb_loads_but_lmp_mpi_is_missing(
    testbed: Testbed, user: str
) -> None:
    center = testbed.center("centerb")
    missing = apps.bin_dir(center, "lammps/7Jan2022")
    script = apps.module_prelude(center, "lammps/7Jan2022") + (
        'echo "PATH=$PATH"\ncommand -v lmp_mpi\n'
    )
    proc = remote_bash(testbed, "centerb", user, script)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # command -v found nothing
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"PATH={missing}:"), proc.stdout
    assert not missing.exists()


def test_module_names_differ_per_center(testbed: Testbed) -> None:
    """centerc publishes LAMMPS as LAMMPS/2022.01: centera's name does not load there."""
    center = testbed.center("centerc")
    proc = remote_bash(testbed, "centerc", "alice", apps.module_prelude(center, "lammps/7Jan2022"))
    assert proc.returncode != 0
    assert "lammps/7Jan2022" in proc.stderr
    assert apps.module_tree(center) == center.dir / "apps" / "modules"
    assert apps.module_tree(testbed.center("centera")) == testbed.base / "centera" / "modulefiles"


@pytest.mark.parametrize("cid", ["centera", "centerb", "centerc", "centerd"])
def test_gateway_center_file_binds_the_modules(testbed: Testbed, cid: str) -> None:
    """The center file `up` wrote holds `applications_section`, valid for the gateway."""
    path = testbed.gateway_config.parent / "centers" / f"{cid}.yaml"
    config = CenterConfig.model_validate(yaml.safe_load(path.read_text()))
    section = apps.applications_section(testbed.center(cid), testbed.base)
    assert config.applications.model_dump() == section
    assert config.applications.modules.paths == [str(apps.module_tree(testbed.center(cid)))]
    hpcc = config.applications.binding("hpcc", "1.5.0")
    assert hpcc is not None and hpcc.modules == ["hpcc/1.5.0"]
    lammps = config.applications.binding("lammps", "7Jan2022")
    expected = {"centera": None, "centerb": "lmp_mpi", "centerc": "lmp_serial"}
    if cid in expected:
        assert lammps is not None and lammps.executable == expected[cid]
    else:
        assert lammps is None
    assert (config.applications.binding("gromacs", "2022.5") is not None) == (cid == "centerb")


# ------------------------------------------------------------ real batch jobs


class Job:
    """A job script in a fresh directory of the user's at a center, submitted with sbatch
    (or qsub at the PBS center); the script writes `exit` (its status) when it ends."""

    def __init__(self, tb: Testbed, cid: str, user: str, body: str) -> None:
        self.tb, self.cid, self.user = tb, cid, user
        self.dir = Path(checked(tb, cid, user, "mktemp -d /tmp/hpcfed-apps.XXXXXX").strip())
        self.script = (
            "#!/bin/bash\n"
            f"cd {self.dir}\n"
            "trap 'echo $? > exit.tmp && mv exit.tmp exit' EXIT\n"
            "set -e\n" + body
        )

    def submit(self, *options: str) -> str:
        kind = self.tb.center(self.cid).kind
        command = "qsub" if kind == "pbs" else "sbatch --parsable"
        out = checked(
            self.tb,
            self.cid,
            self.user,
            f"cd {self.dir}\ncat > job.sh <<'HPCFED_JOB'\n{self.script}HPCFED_JOB\n"
            f"{command} {shlex.join(options)} job.sh\n",
        )
        self.id = out.strip().splitlines()[-1]
        assert self.id.isdigit(), out
        return self.id

    def wait(self) -> int:
        """The script's exit status, once it has ended (the job dir is on this machine).

        Fails at once if the scheduler ended the job without the script writing its status
        (cancelled, killed at its time limit); waits up to JOB_TIMEOUT while it is queued
        behind other jobs or running."""
        marker = self.dir / "exit"
        deadline = time.monotonic() + JOB_TIMEOUT
        ended_at: float | None = None
        next_check = 0.0
        while not marker.exists():
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 2.0
                state = self.state()
                if ended_at is None and (state in ENDED or state == ""):
                    ended_at = now  # the marker is written before the job ends: a grace
            if ended_at is not None and now - ended_at > 5.0:
                pytest.fail(f"job {self.id} at {self.cid} ended without its status: {self.show()}")
            if now > deadline:
                pytest.fail(
                    f"job {self.id} at {self.cid} did not end in {JOB_TIMEOUT}s: {self.show()}"
                )
            time.sleep(0.1)
        return int(marker.read_text())

    def show(self) -> str:
        proc = subprocess.run(
            ["scontrol", "show", "job", self.id],
            env=self.tb.scheduler_env(self.cid),
            capture_output=True,
            text=True,
            check=False,
        )
        return proc.stdout + proc.stderr

    def state(self) -> str | None:
        """Slurm's JobState; '' once it has forgotten the job (MinJobAge); None when the
        controller does not answer (restarted by someone else's test)."""
        shown = self.show()
        if "Invalid job id" in shown:
            return ""
        for word in shown.split():
            if word.startswith("JobState="):
                return word.split("=", 1)[1]
        return None

    def read(self, name: str) -> str:
        """A file of the job's directory, read over ssh as the job's user."""
        return checked(self.tb, self.cid, self.user, f"cat {self.dir}/{name}")

    def output(self) -> str:
        """What the job printed (slurm-<id>.out, or qsub's job.sh.o<id> and .e<id>)."""
        script = f"cd {self.dir} && cat slurm-*.out job.sh.[oe]* 2>/dev/null; true"
        return remote_bash(self.tb, self.cid, self.user, script).stdout

    def remove(self) -> None:
        checked(self.tb, self.cid, self.user, f"rm -rf {self.dir}")


def thermo(log: str) -> list[list[float]]:
    """The thermo rows of the (single) run in a log.lammps."""
    table = log.split("Step Temp E_pair E_mol TotEng Press", 1)[1].split("Loop time", 1)[0]
    return [[float(x) for x in line.split()] for line in table.strip().splitlines()]


MELT_CASES = [
    ("centera", "alice", "lammps/7Jan2022", "lmp"),
    ("centera", "dave", "lammps/7Jan2022", "lmp"),
    ("centerc", "alice", "LAMMPS/2022.01", "lmp_serial"),
    ("centerc", "dave", "LAMMPS/2022.01", "lmp_serial"),
]


@pytest.mark.parametrize(("cid", "user", "module", "executable"), MELT_CASES)
def test_lammps_melt_in_a_batch_job(
    testbed: Testbed, cid: str, user: str, module: str, executable: str
) -> None:
    center = testbed.center(cid)
    body = apps.module_prelude(center, module) + (
        # LAMMPS's own example, its run length made a variable set with -var
        f"sed 's/^run.*/run ${{steps}}/' {apps.MELT_INPUT} > in.melt\n"
        f"{executable} -in in.melt -var steps 50 -screen none\n"
    )
    job = Job(testbed, cid, user, body)
    try:
        job.submit()
        status = job.wait()
        assert status == 0, job.output()
        log = job.read("log.lammps")
        assert "Loop time of" in log and "on 1 procs for 50 steps with 4000 atoms" in log
        rows = thermo(log)
        assert [row[0] for row in rows] == [0, 50]
        assert rows[0] == [0, 3, -6.7733681, 0, -2.2744931, -3.7033504]
        assert rows[1][:3] == pytest.approx([50, 1.6842865, -4.8082494], rel=1e-5)
    finally:
        job.remove()


TOPOLOGY = """#include "oplsaa.ff/forcefield.itp"
#include "oplsaa.ff/spc.itp"

[ system ]
Water

[ molecules ]
"""
MDP = """integrator    = md
dt            = 0.002
nsteps        = 50
cutoff-scheme = Verlet
nstlist       = 10
coulombtype   = PME
rcoulomb      = 0.7
rvdw          = 0.7
tcoupl        = V-rescale
tc-grps       = System
tau-t         = 0.1
ref-t         = 300
nstenergy     = 10
nstlog        = 10
"""


def test_gromacs_water_box_md_in_a_batch_job_at_centerb(testbed: Testbed) -> None:
    center = testbed.center("centerb")
    body = apps.module_prelude(center, "gromacs/2022.5") + (
        f"cat > topol.top <<'EOF'\n{TOPOLOGY}EOF\n"
        f"cat > md.mdp <<'EOF'\n{MDP}EOF\n"
        "gmx -quiet solvate -cs spc216 -box 1.5 1.5 1.5 -o conf.gro -p topol.top\n"
        "gmx -quiet grompp -f md.mdp -c conf.gro -p topol.top -o topol.tpr\n"
        "gmx -quiet mdrun -nt 1 -s topol.tpr -deffnm md\n"
    )
    job = Job(testbed, "centerb", "alice", body)
    try:
        job.submit()
        assert job.wait() == 0, job.output()
        topology = job.read("topol.top")
        waters = re.search(r"^SOL\s+(\d+)\s*$", topology, re.MULTILINE)
        assert waters and int(waters.group(1)) > 100, topology
        md_log = job.read("md.log")
        assert "Finished mdrun" in md_log
        assert re.search(r"^\s+Step\s+Time\n\s+50\s+0\.10000", md_log, re.MULTILINE), md_log
    finally:
        job.remove()


@pytest.mark.parametrize(
    ("cid", "user", "slots"),
    [("centera", "alice", ("-n", "2")), ("centerc", "dave", ("-l", "nodes=1:ppn=2"))],
)
def test_hpcc_hpl_on_two_mpi_ranks_in_a_batch_job(
    testbed: Testbed, cid: str, user: str, slots: tuple[str, str]
) -> None:
    """Open MPI takes its slots from the job's allocation: `mpirun -np 2` needs a job of
    two tasks, and nothing else (no srun, no MCA settings) in the testbed's jobs."""
    center = testbed.center(cid)
    body = apps.module_prelude(center, "hpcc/1.5.0") + (
        f"cat > hpccinf.txt <<'EOF'\n{hpccinf(1000, 128, 1, 2)}EOF\nmpirun -np 2 hpcc\n"
    )
    job = Job(testbed, cid, user, body)
    try:
        job.submit(*slots)
        assert job.wait() == 0, job.output()
        report = job.read("hpccoutf.txt")
        summary = report.split("Begin of Summary section.", 1)[1].split("End of Summary", 1)[0]
        results = dict(line.split("=", 1) for line in summary.splitlines() if "=" in line)
        assert results["CommWorldProcs"] == "2"
        assert (results["HPL_N"], results["HPL_NB"]) == ("1000", "128")
        assert (results["HPL_nprow"], results["HPL_npcol"]) == ("1", "2")
        assert results["Success"] == "1"
        assert float(results["HPL_Tflops"]) > 0
    finally:
        job.remove()
