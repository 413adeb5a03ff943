"""Golden batch scripts for PBS, both dialects: a job spec in, the exact job.sh out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.base import JobRequest
from adapters.batch.jobdir import JobDir, SpecRefused
from adapters.errors import SubmitRejected
from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.script import build_pbs_script, pbspro_array, torque_array
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHPool, SSHTarget
from tests.unit.test_slurm_scripts import load

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
SPECS = sorted(p.stem for p in SCRIPTS.glob("*.json"))
HOME = "/home/alice"
ROOT = "/home/alice/.hpcfed"


def render(name: str, dialect: str) -> str:
    """The script, or (a golden file too) why this dialect refuses the spec."""
    job = load(name, "pbs")
    try:
        return build_pbs_script(job, JobDir(ROOT, job.gateway_id), HOME, dialect)
    except SpecRefused as refused:
        return f"# refused: {refused.field}: {refused}\n"


@pytest.mark.parametrize("dialect", ["torque", "pbspro"])
@pytest.mark.parametrize("name", SPECS)
def test_pbs_script_matches_golden_file(name: str, dialect: str) -> None:
    path = SCRIPTS / f"{name}.{dialect}.sh"
    text = render(name, dialect)
    if os.environ.get("HPCFED_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}; run with HPCFED_UPDATE_GOLDEN=1"
    assert text == path.read_text()


def test_torque_asks_for_nodes_and_processors_per_node() -> None:
    text = render("full_script", "torque")
    assert "#PBS -l nodes=2:ppn=8:gpus=2\n" in text
    assert "#PBS -l walltime=26:03:04\n" in text
    assert "#PBS -l mem=16384mb\n" in text  # Torque's mem is the whole job's
    assert "#PBS -q long\n#PBS -A proj42\n" in text


def test_pbspro_asks_for_chunks_with_ngpus() -> None:
    text = render("full_script", "pbspro")
    assert "#PBS -l select=2:ncpus=8:mpiprocs=4:mem=8192mb:ngpus=2\n" in text


@pytest.mark.parametrize("dialect", ["torque", "pbspro"])
def test_job_writes_its_own_output_into_the_job_dir(dialect: str) -> None:
    # Slurm's qsub ignores -o/-e; the job redirects itself before anything runs.
    job = load("minimal_command")
    jobdir = JobDir(ROOT, job.gateway_id)
    lines = render("minimal_command", dialect).splitlines()
    redirect = f"exec >>{jobdir.path}/stdout 2>>{jobdir.path}/stderr"
    assert redirect in lines
    assert lines.index(redirect) < next(i for i, x in enumerate(lines) if x.startswith("cd "))


def test_pbs_job_name_is_short_and_starts_with_a_letter() -> None:
    assert "#PBS -N x__rm_-rf_____i\n" in render("hostile_values", "torque")


def minimal(**fields: object) -> JobRequest:
    spec = json.loads((SCRIPTS / "minimal_command.json").read_text())
    return JobRequest(**{**spec, **fields})


@pytest.mark.parametrize(
    "spec,torque",
    [
        ("0-3", "0-3"),
        ("1,3,5-7%2", "1,3,5-7%2"),
        ("0-15:2%4", "0,2,4,6,8,10,12,14%4"),  # Torque's -t has no steps
        ("0-4:1", "0-4"),
    ],
)
def test_torque_array_ranges(spec: str, torque: str) -> None:
    assert torque_array(spec) == torque


@pytest.mark.parametrize("spec", ["1,3,5-7", "5", "5-5", "0-3,8"])
def test_pbspro_refuses_arrays_it_cannot_express(spec: str) -> None:
    with pytest.raises(SpecRefused, match="one range of at least two indices") as refused:
        pbspro_array(spec)
    assert refused.value.field == "array"


def test_pbspro_takes_one_stepped_range_with_a_limit() -> None:
    assert pbspro_array("1-15:2%4") == "1-15:2%4"


def test_torque_asks_for_a_qos_twice_for_slurms_qsub_drops_it() -> None:
    text = build_pbs_script(minimal(qos="high"), JobDir(ROOT, minimal().gateway_id), HOME, "torque")
    assert "#PBS -W x=QOS:high\n#SBATCH --qos=high\n" in text


def test_torque_depends_on_an_array_with_its_array_conditions() -> None:
    deps = [("afterok", "4250[].head"), ("after", "4251[].head"), ("afterany", "4252.head")]
    text = render_job(minimal(dependencies=deps), "torque")
    assert "#PBS -W depend='afterokarray:4250[].head,afterstartarray:4251[].head," in text
    assert "afterany:4252.head'\n" in text
    assert "#PBS -W depend='afterok:4250[].head," in render_job(
        minimal(dependencies=deps), "pbspro"
    )


def render_job(job: JobRequest, dialect: str) -> str:
    return build_pbs_script(job, JobDir(ROOT, job.gateway_id), HOME, dialect)


@pytest.mark.parametrize("extra", ["-t 0-3", "-J 1-4", "-W depend=afterok:1", "-S /bin/sh"])
def test_extra_directives_cannot_replace_arrays_dependencies_or_the_shell(extra: str) -> None:
    with pytest.raises(SpecRefused) as refused:
        render_job(minimal(extra_directives=["-m abe", extra]), "torque")
    assert refused.value.field == "extra_directives.pbs[1]"


def test_array_elements_send_their_output_to_their_own_files() -> None:
    job = minimal(array="0-3")
    path = JobDir(ROOT, job.gateway_id).path
    assert (
        f'exec >>{path}/stdout."$HPCFED_ARRAY_INDEX" 2>>{path}/stderr."$HPCFED_ARRAY_INDEX"\n'
        in render_job(job, "torque")
    )


async def test_qos_at_a_pbspro_center_is_refused_naming_the_field_and_center() -> None:
    # Port 1: any attempt to reach the center would fail as unavailable, not as rejected.
    target = SSHTarget("centerp", "127.0.0.1", 1, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    adapter = PbsAdapter(target, SSHPool(), dialect="pbspro")
    with pytest.raises(SubmitRejected) as caught:
        await adapter.submit(minimal(qos="high"))
    error = caught.value
    assert error.field == "qos" and adapter.remote_commands == 0
    assert "centerp" in error.message and "'qos'" in error.message
    with pytest.raises(SubmitRejected) as caught:
        await adapter.submit(minimal(array="1,3"))
    assert caught.value.field == "array"
