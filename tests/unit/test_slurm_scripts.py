"""Golden batch scripts for Slurm: a job spec in, the exact job.sh out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.base import JobRequest
from adapters.jobdir import JobDir, render_user_script
from adapters.slurm import build_sbatch_script

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
SPECS = sorted(p.stem for p in SCRIPTS.glob("*.json"))
HOME = "/home/alice"
ROOT = "/home/alice/.hpcfed"


def load(name: str) -> JobRequest:
    return JobRequest(**json.loads((SCRIPTS / f"{name}.json").read_text()))


def check_golden(path: Path, text: str) -> None:
    if os.environ.get("HPCFED_UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden file {path.name}; run with HPCFED_UPDATE_GOLDEN=1"
    assert text == path.read_text()


@pytest.mark.parametrize("name", SPECS)
def test_sbatch_script_matches_golden_file(name: str) -> None:
    job = load(name)
    text = build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME, default_queue="debug")
    check_golden(SCRIPTS / f"{name}.slurm.sh", text)


@pytest.mark.parametrize("name", SPECS)
def test_user_script_matches_golden_file(name: str) -> None:
    check_golden(SCRIPTS / f"{name}.script", render_user_script(load(name)))


def test_every_spec_has_its_golden_files() -> None:
    for name in SPECS:
        for suffix in (".slurm.sh", ".torque.sh", ".pbspro.sh", ".script"):
            assert (SCRIPTS / f"{name}{suffix}").exists(), f"{name}{suffix} missing"


def test_directives_carry_the_gateway_id_and_job_dir() -> None:
    job = load("minimal_command")
    jobdir = JobDir(ROOT, job.gateway_id)
    text = build_sbatch_script(job, jobdir, HOME)
    assert f"#SBATCH --comment=hpcfed:{job.gateway_id}\n" in text
    assert f"#SBATCH --output={jobdir.path}/stdout\n" in text
    assert f"#SBATCH --error={jobdir.path}/stderr\n" in text
    assert "--partition" not in text  # no queue asked and no default: the center decides


def test_walltime_is_rendered_as_days_hours_minutes_seconds() -> None:
    text = build_sbatch_script(
        load("full_script"), JobDir(ROOT, load("full_script").gateway_id), HOME
    )
    assert "#SBATCH --time=1-02:03:04\n" in text  # 93784 s


def test_hostile_job_name_cannot_add_directives_or_commands() -> None:
    job = load("hostile_values")
    text = build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME)
    assert "#SBATCH --job-name=x__rm_-rf_____id_\n" in text
    assert "$(id)" not in text.split("\n\n")[0]  # the directive block


def test_a_directive_value_with_a_newline_is_refused() -> None:
    spec = json.loads((SCRIPTS / "minimal_command.json").read_text())
    job = JobRequest(**{**spec, "account": "acct\n#SBATCH --uid=0"})
    with pytest.raises(ValueError, match="control character"):
        build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME)
