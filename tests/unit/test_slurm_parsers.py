"""Slurm output parsers over output recorded from a real cluster, and the state map."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.base import JobState
from adapters.jobdir import JobDir
from adapters.slurm import (
    SLURM_STATES,
    build_cancel_command,
    build_sacct_command,
    build_squeue_command,
    cancel_refused_because_finished,
    parse_sacct,
    parse_squeue,
    parse_squeue_comments,
    slurm_state,
    slurm_time,
    wait_status_exit_code,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "slurm"
GID = "0b5b8a5e-8d4c-4c5e-9a43-3f1b2d6c7e8f"

# Every state squeue and sacct document, each with the one state it must map to.
EXPECTED = {
    "PENDING": JobState.QUEUED,
    "CONFIGURING": JobState.QUEUED,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED,
    "NODE_FAIL": JobState.FAILED,
    "PREEMPTED": JobState.FAILED,
    "OUT_OF_MEMORY": JobState.FAILED,
    "BOOT_FAIL": JobState.FAILED,
    "DEADLINE": JobState.TIMEOUT,
    "SUSPENDED": JobState.SUSPENDED,
    "STOPPED": JobState.SUSPENDED,
    "REQUEUED": JobState.QUEUED,
    "REQUEUE_HOLD": JobState.HELD,
    "REQUEUE_FED": JobState.QUEUED,
    "RESIZING": JobState.RUNNING,
    "REVOKED": JobState.CANCELLED,
    "SPECIAL_EXIT": JobState.HELD,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESV_DEL_HOLD": JobState.HELD,
}


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize("native,state", sorted(EXPECTED.items()))
def test_every_slurm_state_maps_to_exactly_one_state(native: str, state: JobState) -> None:
    assert SLURM_STATES[native] is state
    assert slurm_state(native) is state


def test_the_map_holds_only_normalized_states() -> None:
    assert set(EXPECTED) <= set(SLURM_STATES)
    assert all(isinstance(v, JobState) for v in SLURM_STATES.values())
    assert JobState.UNKNOWN not in SLURM_STATES.values()


def test_unmapped_state_is_unknown_and_kept() -> None:
    assert slurm_state("FROBNICATED") is JobState.UNKNOWN
    assert slurm_state("") is JobState.UNKNOWN


def test_sacct_decorations_are_read() -> None:
    assert slurm_state("CANCELLED by 1001") is JobState.CANCELLED
    assert slurm_state("RUNNING+") is JobState.RUNNING


def test_a_pending_job_held_by_someone_is_held() -> None:
    assert slurm_state("PENDING", "JobHeldUser") is JobState.HELD
    assert slurm_state("PENDING", "JobHeldAdmin") is JobState.HELD
    assert slurm_state("PENDING", "Resources") is JobState.QUEUED


def test_recorded_squeue_output_parses_to_each_jobs_state() -> None:
    statuses = parse_squeue(read("squeue_mixed.txt"))
    seen = {nid: (s.state, s.native_state, s.reason, s.exit_code) for nid, s in statuses.items()}
    assert seen["13"] == (JobState.RUNNING, "RUNNING", None, None)
    assert seen["14"] == (JobState.HELD, "PENDING", "JobHeldUser", None)
    assert seen["15"] == (JobState.QUEUED, "PENDING", "BeginTime", None)
    assert seen["16"] == (JobState.COMPLETED, "COMPLETED", None, 0)
    assert seen["17"] == (JobState.FAILED, "FAILED", "NonZeroExitCode", 3)
    assert seen["11"] == (JobState.FAILED, "FAILED", "NonZeroExitCode", 7)
    assert seen["18"] == (JobState.CANCELLED, "CANCELLED", "BeginTime", None)
    assert seen["19"] == (JobState.TIMEOUT, "TIMEOUT", "TimeLimit", None)
    assert seen["20"] == (JobState.FAILED, "FAILED", "JobLaunchFailure", 137)  # SIGKILL
    assert len(statuses) == len(read("squeue_mixed.txt").splitlines())


def test_squeue_comments_give_gateway_ids() -> None:
    found = parse_squeue_comments(read("squeue_mixed.txt"))
    assert found["11111111-1111-4111-8111-111111111111"] == "13"
    assert found["22222222-2222-4222-8222-222222222222"] == "14"
    assert found["e97dc3b2-f892-4298-a577-babdffe073ca"] == "10"
    assert "(null)" not in "".join(found)


def test_sacct_output_parses_states_and_exit_codes() -> None:
    statuses = parse_sacct(read("sacct_parsable2.txt"))
    seen = {nid: (s.state, s.native_state, s.exit_code) for nid, s in statuses.items()}
    assert seen["101"] == (JobState.COMPLETED, "COMPLETED", 0)
    assert seen["102"] == (JobState.FAILED, "FAILED", 3)
    assert seen["103"] == (JobState.CANCELLED, "CANCELLED", None)
    assert seen["104"] == (JobState.TIMEOUT, "TIMEOUT", None)
    assert seen["105"][:2] == (JobState.FAILED, "OUT_OF_MEMORY")
    assert seen["106"][0] is JobState.FAILED
    assert seen["107"] == (JobState.QUEUED, "PENDING", None)
    assert seen["108_3"] == (JobState.COMPLETED, "COMPLETED", 0)
    assert seen["109"] == (JobState.FAILED, "FAILED", 137)
    assert statuses["104"].reason == "TimeLimit"


def test_sacct_without_accounting_storage_yields_nothing() -> None:
    assert parse_sacct(read("sacct_disabled.stdout.txt")) == {}
    assert "accounting storage is disabled" in read("sacct_disabled.stderr.txt")


@pytest.mark.parametrize("raw,code", [(0, 0), (768, 3), (1792, 7), (9, 137), (15, 143)])
def test_wait_status_becomes_a_shell_exit_code(raw: int, code: int) -> None:
    assert wait_status_exit_code(raw) == code


@pytest.mark.parametrize(
    "seconds,text",
    [(1, "0-00:00:01"), (59, "0-00:00:59"), (5400, "0-01:30:00"), (93784, "1-02:03:04")],
)
def test_walltime_format(seconds: int, text: str) -> None:
    assert slurm_time(seconds) == text


def test_status_and_history_commands() -> None:
    assert build_squeue_command("alice") == (
        "squeue -h -t all -u alice -O 'JobID:|,State:|,Reason:|,exit_code:|,Comment:'"
    )
    assert build_squeue_command("a b").startswith("squeue -h -t all -u 'a b' ")
    assert build_sacct_command(["1", "2_3"]) == (
        "sacct -X --parsable2 --noheader --format=JobID,State,ExitCode,Reason -j 1,2_3"
    )


def test_cancel_marks_the_job_dir_only_after_scancel_accepted() -> None:
    command = build_cancel_command("42", JobDir("/home/a b/.hpcfed", GID))
    assert command == (
        f"scancel 42 && {{ printf 'cancelled\\n' > '/home/a b/.hpcfed/jobs/{GID}/cancelled'; }}"
        " 2>/dev/null || true"
    )


def test_cancel_of_a_finished_job_is_not_an_error() -> None:
    stderr = "scancel: error: Kill job error on job id 7: Job/step already completing or completed"
    assert cancel_refused_because_finished(stderr)
    assert cancel_refused_because_finished("scancel: error: Invalid job id specified")
    assert not cancel_refused_because_finished("scancel: error: Access/permission denied")
