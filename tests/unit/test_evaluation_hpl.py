"""The evaluation's compute probe: the HPL job script (grid, hpccinf.txt, what it runs,
run for real by bash with stand-ins for mpirun and hpcc) and the parser of hpcc's output
(real output of Debian's hpcc 1.5.0, tests/fixtures/hpcc/)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from gateway.centers.config import CpuHardware
from gateway.centers.descriptor import Measured
from gateway.centers.evaluation.context import CheckFailed
from gateway.centers.evaluation.hpl import (
    BLOCK_SIZE,
    MARK,
    PROBLEM_SIZE,
    HplResult,
    expect_asked,
    hpccinf,
    job_script,
    parse_hpccoutf,
    process_grid,
    record_figures,
    script_said,
)
from gateway.centers.evaluation.models import EvaluationRecord, Figures

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hpcc"
HPCCOUTF = (FIXTURES / "hpccoutf.txt").read_text()


GRIDS = [(1, (1, 1)), (2, (1, 2)), (3, (1, 3)), (4, (2, 2)), (6, (2, 3)), (7, (1, 7))]
GRIDS += [(8, (2, 4)), (12, (3, 4)), (16, (4, 4)), (48, (6, 8)), (97, (1, 97)), (128, (8, 16))]


@pytest.mark.parametrize(("cores", "grid"), GRIDS)
def test_the_grid_is_the_squarest_with_p_at_most_q(cores: int, grid: tuple[int, int]) -> None:
    assert process_grid(cores) == grid


def test_every_grid_up_to_256_cores_uses_them_all_and_is_as_square_as_can_be() -> None:
    for cores in range(1, 257):
        p, q = process_grid(cores)
        assert p * q == cores and p <= q
        assert not any(cores % d == 0 for d in range(p + 1, q) if d * d <= cores), cores


def test_no_grid_without_cores() -> None:
    with pytest.raises(ValueError):
        process_grid(0)
    with pytest.raises(ValueError):
        job_script(0)


def hpl_lines(text: str) -> dict[str, str]:
    """What HPL reads from hpccinf.txt: the first word of lines 6, 8, 11 and 12."""
    lines = text.splitlines()
    return {
        name: lines[i - 1].split()[0] for name, i in (("N", 6), ("NB", 8), ("P", 11), ("Q", 12))
    }


def test_n_nb_and_the_grid_land_on_the_lines_hpl_reads() -> None:
    text = hpccinf(3000, 192, 3, 4)
    assert hpl_lines(text) == {"N": "3000", "NB": "192", "P": "3", "Q": "4"}
    lines = text.splitlines()
    assert len(lines) == 36 and lines[31].startswith("##### This line (no. 32) is ignored")
    assert lines[4].split()[0] == lines[6].split()[0] == lines[9].split()[0] == "1"  # one each
    assert lines[32].split()[0] == lines[34].split()[0] == "0"  # no extra PTRANS sizes
    # The input the fixture's real run read is this very text.
    assert hpl_lines((FIXTURES / "hpccinf.txt").read_text()) == {
        "N": "2000",
        "NB": "128",
        "P": "1",
        "Q": "2",
    }


# ------------------------------------------------------------ the script, run by bash


def executable(path: Path, body: str) -> Path:
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_script(
    tmp_path: Path,
    cores: int,
    hpcc_body: str,
    cpus: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """The probe's script in `tmp_path/job`, with an `mpirun` that logs its arguments
    and runs the program it names, and `hpcc_body` as hpcc; pinned to `cpus`."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    executable(
        stubs / "mpirun",
        'printf "%s\\n" "$*" > "$HPCFED_TEST_LOG/mpirun.args"\n'
        'while [ "$#" -gt 1 ]; do shift; done\nexec "$1"\n',
    )
    hpcc = executable(stubs / "fake-hpcc", hpcc_body)
    job = tmp_path / "job"
    job.mkdir(exist_ok=True)
    script = job_script(
        cores,
        setup=[f'export PATH={stubs}:"$PATH"', "export HPCFED_SETUP_RAN=yes"],
        executable=str(hpcc),
    )
    argv = ["bash", "-c", script]
    if cpus is not None:
        argv = [shutil.which("taskset") or "taskset", "-c", cpus, *argv]
    return subprocess.run(
        argv,
        cwd=job,
        env={**os.environ, "HPCFED_TEST_LOG": str(tmp_path), **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


#: An hpcc that keeps what it was given and "ran" the fixture's real run.
RECORDING_HPCC = (
    'cp hpccinf.txt "$HPCFED_TEST_LOG/seen-hpccinf.txt"\n'
    'echo "setup=$HPCFED_SETUP_RAN omp=$OMP_NUM_THREADS" > "$HPCFED_TEST_LOG/hpcc.env"\n'
    f"cat {FIXTURES / 'hpccoutf.txt'} >> hpccoutf.txt\n"
)


def test_the_script_runs_mpirun_on_its_cores_and_prints_the_summary(tmp_path: Path) -> None:
    done = run_script(tmp_path, 2, RECORDING_HPCC, cpus="0,1")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "mpirun.args").read_text().split() == [
        "--oversubscribe",
        "-np",
        "2",
        str(tmp_path / "stubs" / "fake-hpcc"),
    ]
    seen = (tmp_path / "seen-hpccinf.txt").read_text()
    assert hpl_lines(seen) == {"N": str(PROBLEM_SIZE), "NB": str(BLOCK_SIZE), "P": "1", "Q": "2"}
    asked = hpccinf(PROBLEM_SIZE, BLOCK_SIZE, 1, 2)
    assert [line.split() for line in seen.splitlines()] == [
        line.split() for line in asked.splitlines()
    ]
    assert (tmp_path / "hpcc.env").read_text().split() == ["setup=yes", "omp=1"]
    said = script_said(done.stdout)
    assert said == {
        "requested": "2",
        "node": "2",
        "cores": "2",
        "grid": "1x2",
        "n": str(PROBLEM_SIZE),
        "nb": str(BLOCK_SIZE),
    }
    printed = done.stdout.splitlines()
    assert printed[1] == "Begin of Summary section." and printed[-1] == "End of Summary section."
    assert parse_hpccoutf(done.stdout) == parse_hpccoutf(HPCCOUTF)


def test_more_cores_than_the_node_shows_the_job_run_on_those_it_has(tmp_path: Path) -> None:
    """A scheduler may count more CPUs than the machine has (the testbed's 8 on 2): the
    script runs on what the job's affinity shows; one core: hpcc alone, no mpirun."""
    done = run_script(tmp_path, 8, RECORDING_HPCC, cpus="0")
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "mpirun.args").exists()
    assert script_said(done.stdout)["requested"] == "8"
    assert {k: script_said(done.stdout)[k] for k in ("node", "cores", "grid")} == {
        "node": "1",
        "cores": "1",
        "grid": "1x1",
    }
    assert hpl_lines((tmp_path / "seen-hpccinf.txt").read_text())["P"] == "1"
    assert hpl_lines((tmp_path / "seen-hpccinf.txt").read_text())["Q"] == "1"


def test_a_stale_output_file_is_removed_and_a_failing_hpcc_fails_the_job(tmp_path: Path) -> None:
    job = tmp_path / "job"
    job.mkdir()
    (job / "hpccoutf.txt").write_text(HPCCOUTF)  # an earlier run's, with a summary
    done = run_script(tmp_path, 1, 'echo "hpcc: cannot allocate" >&2\nexit 3\n', cpus="0")
    assert done.returncode == 3
    assert "cannot allocate" in done.stderr
    assert not (job / "hpccoutf.txt").exists()
    assert done.stdout.startswith(MARK + " ")
    with pytest.raises(CheckFailed) as failed:
        parse_hpccoutf(done.stdout)
    assert failed.value.message.startswith("hpcc printed no summary section; its output ends:")
    assert "HPCFED_HPL requested=1" in failed.value.message


def test_without_a_summary_the_script_prints_the_output_files_tail(tmp_path: Path) -> None:
    lines = "".join(f"line {i}\\n" for i in range(100))
    done = run_script(tmp_path, 1, f'printf "{lines}" > hpccoutf.txt\nexit 1\n', cpus="0")
    assert done.returncode == 1
    printed = done.stdout.splitlines()
    assert printed[1:] == [f"line {i}" for i in range(60, 100)]


# ------------------------------------------------------------ the parser


def test_the_parser_reads_hpls_figures_from_real_hpcc_output() -> None:
    result = parse_hpccoutf(HPCCOUTF)
    assert result == HplResult(
        gflops=pytest.approx(8.2908), n=2000, nb=128, nprow=1, npcol=2, seconds=0.644007
    )
    assert result.cores == 2
    # The job's stdout (its own line, then the summary section) reads the same.
    assert parse_hpccoutf((FIXTURES / "job-stdout.txt").read_text()) == result


def test_the_parser_takes_the_last_run_of_a_file_hpcc_appended_to() -> None:
    other = (FIXTURES / "hpccoutf-too-few-ranks.txt").read_text()
    assert parse_hpccoutf(other + HPCCOUTF).n == 2000
    assert parse_hpccoutf(HPCCOUTF + other).n == 3520


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "no summary section"),
        ("mpirun was unable to launch the specified application\n", "no summary section"),
        (HPCCOUTF.replace("HPL_Tflops=0.0082908", "HPL_Tflops=0"), "no HPL result"),
        (HPCCOUTF.replace("HPL_Tflops=0.0082908\n", ""), "no HPL result"),
        (HPCCOUTF.replace("HPL_N=2000", "HPL_N=two"), "no HPL result"),
        (HPCCOUTF.split("HPL_Tflops=")[0], "no HPL result"),
    ],
)
def test_output_without_an_hpl_result_fails_with_its_tail(text: str, why: str) -> None:
    with pytest.raises(CheckFailed) as failed:
        parse_hpccoutf(text)
    assert failed.value.message.startswith(f"hpcc printed {why}; its output ends: ")
    if text:
        assert text.strip().splitlines()[-1][-40:] in failed.value.message


def test_hpcc_falling_back_to_its_own_problem_is_a_failure() -> None:
    """Given a 1x4 grid and two ranks, hpcc 1.5.0 runs a default problem (N=3520 NB=80, 1x2)
    and says so only in HPL's error lines: the figures are not of the problem asked."""
    result = parse_hpccoutf((FIXTURES / "hpccoutf-too-few-ranks.txt").read_text())
    assert (result.n, result.nprow, result.npcol) == (3520, 1, 2)
    said = {"cores": "4", "grid": "1x4"}
    with pytest.raises(CheckFailed) as failed:
        expect_asked(result, said, 2000, 128)
    assert failed.value.message == (
        "hpcc ran N=3520 NB=80 on a 1x2 grid, not the problem written for it (N=2000 NB=128 "
        "on 4 cores, grid 1x4): it did not take that hpccinf.txt"
    )
    right = parse_hpccoutf(HPCCOUTF)
    expect_asked(right, {"cores": "2", "grid": "1x2"}, 2000, 128)
    expect_asked(right, {}, 2000, 128)
    with pytest.raises(CheckFailed):
        expect_asked(right, {"cores": "4"}, 2000, 128)


# ------------------------------------------------------------ figures and records


def test_figures_put_hpl_beside_the_peak_of_the_cores_it_ran_on() -> None:
    figures = Figures()
    record_figures(
        figures, parse_hpccoutf(HPCCOUTF), CpuHardware(clock_ghz=2.6, flops_per_cycle=32)
    )
    assert figures.model_dump(exclude_none=True) == {
        "kernel": "hpl",
        "hpl_gflops": 8.2908,
        "hpl_cores": 2,
        "hpl_n": 2000,
        "hpl_nb": 128,
        "hpl_seconds": 0.644,
        "peak_gflops": 166.4,
        "efficiency": round(8.2908 / 166.4, 4),
        "gflops_per_core": 4.1454,
    }
    bare = Figures()
    record_figures(bare, parse_hpccoutf(HPCCOUTF), None)
    assert (bare.peak_gflops, bare.efficiency, bare.hpl_gflops) == (None, None, 8.2908)


def test_a_stored_record_of_the_one_core_probe_still_loads() -> None:
    old = {
        "id": "e1",
        "center": "centera",
        "suite_version": "2",
        "state": "DONE",
        "requested_by": "root",
        "created_at": "2026-01-01T00:00:00Z",
        "figures": {"gflops_per_core": 0.029, "kernel": "python-multiply-add"},
        "checks": [{"name": "compute.probe", "title": "t", "weight": 5, "required": False}],
    }
    record = EvaluationRecord.model_validate(old)
    assert record.figures.gflops_per_core == 0.029 and record.figures.hpl_gflops is None
    measured = Measured(
        kernel="python-multiply-add",
        gflops_per_core=0.029,
        evaluation_id="e1",
        measured_at=record.created_at,
    )
    assert measured.hpl_gflops is None and measured.efficiency is None
