"""Golden batch scripts for Slurm: a job spec in, the exact job.sh out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adapters.base import JobRequest
from adapters.batch.jobdir import JobDir, SpecRefused, render_user_script
from adapters.errors import SubmitRejected
from adapters.slurm.adapter import SlurmAdapter
from adapters.slurm.script import build_sbatch_script
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import SSHPool, SSHTarget

SCRIPTS = Path(__file__).resolve().parent.parent / "fixtures" / "scripts"
SPECS = sorted(p.stem for p in SCRIPTS.glob("*.json"))
HOME = "/home/alice"
ROOT = "/home/alice/.hpcfed"


def load(name: str, family: str = "slurm") -> JobRequest:
    """A spec; its extra directives, as in the gateway's spec, are per kind of center."""
    spec = json.loads((SCRIPTS / f"{name}.json").read_text())
    extra = spec.pop("extra_directives", {})
    return JobRequest(**spec, extra_directives=tuple(extra.get(family, ())))


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


def test_array_elements_write_their_own_output_files() -> None:
    job = load("fidelity")
    text = build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME)
    path = JobDir(ROOT, job.gateway_id).path
    assert f"#SBATCH --output={path}/stdout.%a\n" in text
    assert f"#SBATCH --error={path}/stderr.%a\n" in text
    assert "#SBATCH --array=0-15:2%4\n" in text


def test_qos_dependencies_and_extra_directives_follow_the_table() -> None:
    job = load("fidelity")
    lines = build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME).split("\n\n")[0]
    directives = lines.splitlines()
    assert "#SBATCH --qos=high" in directives
    assert "#SBATCH --dependency=afterok:4242:4243,afterany:4244" in directives
    assert directives[-2:] == ["#SBATCH --exclusive", "#SBATCH --constraint=haswell"]


@pytest.mark.parametrize(
    "extra", ["--output=/tmp/elsewhere", "-o /tmp/x", "--comment=mine", "-a 0-3", "-d afterok:1"]
)
def test_extra_directives_cannot_override_what_the_gateway_relies_on(extra: str) -> None:
    spec = json.loads((SCRIPTS / "minimal_command.json").read_text())
    job = JobRequest(**{**spec, "extra_directives": ["--exclusive", extra]})
    with pytest.raises(SpecRefused) as refused:
        build_sbatch_script(job, JobDir(ROOT, job.gateway_id), HOME)
    assert refused.value.field == "extra_directives.slurm[1]"


async def test_a_refused_spec_is_rejected_before_the_center_is_contacted() -> None:
    # Port 1: any attempt to reach the center would fail as unavailable, not as rejected.
    target = SSHTarget("centera", "127.0.0.1", 1, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    adapter = SlurmAdapter(target, SSHPool())
    spec = json.loads((SCRIPTS / "minimal_command.json").read_text())
    job = JobRequest(**{**spec, "dependencies": [("afterok", "12.server")]})
    with pytest.raises(SubmitRejected) as caught:
        await adapter.submit(job)
    assert caught.value.field == "dependencies[0].job"
    assert "centera" in caught.value.message and adapter.remote_commands == 0
