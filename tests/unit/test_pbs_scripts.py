"""Golden batch scripts for PBS, both dialects: a job spec in, the exact job.sh out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.base import JobRequest
from adapters.jobdir import JobDir
from adapters.pbs import build_pbs_script

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
SPECS = sorted(p.stem for p in SCRIPTS.glob("*.json"))
HOME = "/home/alice"
ROOT = "/home/alice/.hpcfed"


def load(name: str) -> JobRequest:
    return JobRequest(**json.loads((SCRIPTS / f"{name}.json").read_text()))


def render(name: str, dialect: str) -> str:
    job = load(name)
    return build_pbs_script(job, JobDir(ROOT, job.gateway_id), HOME, dialect)


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
