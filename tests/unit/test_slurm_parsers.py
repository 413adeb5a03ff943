"""Slurm output parsers over output recorded from a real cluster, and the state map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.base import JobRequest, JobState, SubmitRejected
from adapters.jobdir import JobDir
from adapters.slurm import (
    SLURM_STATES,
    SlurmAdapter,
    build_cancel_command,
    build_sacct_command,
    build_squeue_command,
    cancel_refused_because_finished,
    parse_sacct,
    parse_squeue,
    parse_squeue_comments,
    sbatch_rejection,
    slurm_state,
    slurm_time,
    wait_status_exit_code,
)
from adapters.ssh import CommandResult, SSHPool, SSHTarget
from adapters.sshkeys import KeyFile

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
    "POWER_UP_NODE": JobState.QUEUED,
    "LAUNCH_FAILED": JobState.FAILED,
}


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize("native,state", sorted(EXPECTED.items()))
def test_every_slurm_state_maps_to_exactly_one_state(native: str, state: JobState) -> None:
    assert SLURM_STATES[native] is state
    assert slurm_state(native) is state


def test_the_map_holds_only_normalized_states() -> None:
    assert set(EXPECTED) == set(SLURM_STATES)
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
    assert seen["108"] == (JobState.COMPLETED, "COMPLETED", 0)  # an array of one element
    assert [(e.index, e.native_id) for e in statuses["108"].elements] == [(3, "108_3")]
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
        "squeue -h -t all -u alice -O 'JobArrayID:|,State:|,Reason:|,exit_code:|,Comment:'"
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


def test_recorded_squeue_arrays_give_one_status_per_array_with_its_elements() -> None:
    statuses = parse_squeue(read("squeue_arrays.txt"))
    summary = {
        nid: [(e.index, e.native_id, e.state, e.reason, e.exit_code) for e in s.elements]
        for nid, s in statuses.items()
    }
    assert summary["132"] == [
        (0, "132_0", JobState.COMPLETED, None, 0),
        (1, "132_1", JobState.FAILED, "NonZeroExitCode", 3),
        (2, "132_2", JobState.RUNNING, None, None),
        (3, "132_3", JobState.CANCELLED, None, None),
        (4, "132_4", JobState.RUNNING, None, None),
        (5, "132_5", JobState.QUEUED, "JobArrayTaskLimit", None),  # one left: "132_5"
    ]
    # Pending ranges, expanded: "133_[1,3,6-7]" (5 was cancelled) and "134_[0-14:2%3]".
    assert [e.index for e in statuses["133"].elements] == [1, 3, 6, 7]
    assert [e.index for e in statuses["134"].elements] == list(range(0, 15, 2))
    assert {e.state for e in statuses["134"].elements} == {JobState.HELD}
    assert statuses["134"].state is JobState.HELD
    assert statuses["132"].state is JobState.RUNNING
    assert (statuses["135"].state, statuses["135"].elements) == (JobState.RUNNING, ())


@pytest.mark.parametrize(
    "listed,indices",
    [
        ("123_[2-3%1]", [2, 3]),
        ("123_[2-3]", [2, 3]),
        ("123_[1,3,5-7]", [1, 3, 5, 6, 7]),
        ("123_[0-14:2%3]", [0, 2, 4, 6, 8, 10, 12, 14]),
        ("123_4", [4]),
    ],
)
def test_pending_element_ranges_are_expanded(listed: str, indices: list[int]) -> None:
    status = parse_squeue(f"{listed}|PENDING|JobArrayTaskLimit|0|hpcfed:x\n")["123"]
    assert [e.index for e in status.elements] == indices
    assert all(e.native_id == f"123_{e.index}" for e in status.elements)


def test_an_arrays_comment_gives_the_arrays_own_id() -> None:
    found = parse_squeue_comments(read("squeue_arrays.txt"))
    assert found["44444444-4444-4444-8444-444444444444"] == "132"
    assert found["66666666-6666-4666-8666-666666666666"] == "134"
    assert found["77777777-7777-4777-8777-777777777777"] == "135"


def test_sacct_lists_array_elements_and_pending_ranges() -> None:
    text = "110_1|RUNNING|0:0|None\n110_[2-4%1]|PENDING|0:0|JobArrayTaskLimit\n"
    status = parse_sacct(text)["110"]
    assert [(e.index, e.state) for e in status.elements] == [
        (1, JobState.RUNNING),
        (2, JobState.QUEUED),
        (3, JobState.QUEUED),
        (4, JobState.QUEUED),
    ]


REJECTED = json.loads((FIXTURES / "sbatch_rejected.json").read_text())["cases"]
#: What each recorded (or, where the testbed cannot refuse, written) refusal points at.
REJECTED_FIELDS = {
    "bad_partition": "queue",
    "walltime_over_partition_max": "resources.walltime",
    "too_many_nodes": "resources.nodes",
    "too_many_cpus": "resources.cpus_per_task",
    "too_much_memory": "resources.memory_per_node",
    "gpus_where_there_are_none": "resources.gpus_per_node",
    "too_many_gpus": "resources.gpus_per_node",
    "bad_dependency": "dependencies",
    "array_too_large": "array",
    "bad_qos": "qos",
    "bad_account": "account",
    "association_limits": None,
}
#: The job each case asked for (the directives recorded beside each case).
REJECTED_JOBS = {
    "bad_partition": {"queue": "nosuchpartition"},
    "walltime_over_partition_max": {"queue": "debug", "walltime_seconds": 7200},
    "too_many_nodes": {"nodes": 5},
    "too_many_cpus": {"cpus_per_task": 64},
    "too_much_memory": {"memory_per_node_mib": 999999},
    "gpus_where_there_are_none": {"gpus_per_node": 1},
    "too_many_gpus": {"gpus_per_node": 9, "gpu_type": "a100"},
    "bad_dependency": {"dependencies": [("afterok", "0")]},
    "array_too_large": {"array": "0-100000"},
    "bad_qos": {"qos": "nosuchqos"},
    "bad_account": {"account": "nosuchacct"},
    "association_limits": {"walltime_seconds": 7 * 86400},
}


def test_every_recorded_refusal_has_an_expected_field() -> None:
    assert {c["case"] for c in REJECTED} == set(REJECTED_FIELDS) == set(REJECTED_JOBS)


@pytest.mark.parametrize("case", REJECTED, ids=[c["case"] for c in REJECTED])
def test_sbatch_refusal_names_the_spec_field_it_points_at(case: dict) -> None:
    job = JobRequest(gateway_id=GID, name="r", command="true", **REJECTED_JOBS[case["case"]])
    result = CommandResult(case["exit_status"], case["stdout"].encode(), case["stderr"].encode())
    said, field = sbatch_rejection(result, job)
    assert field == REJECTED_FIELDS[case["case"]]
    assert said == case["stderr"].strip() and "\n\n" not in said


def test_refused_submission_raises_with_the_schedulers_message_and_field() -> None:
    target = SSHTarget("centera", "127.0.0.1", 22201, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    adapter = SlurmAdapter(target, SSHPool())
    case = REJECTED[0]
    result = CommandResult(1, b"", case["stderr"].encode())
    job = JobRequest(gateway_id=GID, name="r", command="true", queue="nosuchpartition")
    with pytest.raises(SubmitRejected) as caught:
        adapter.parse_submit(result, "cd x && { sbatch --parsable job.sh ...", job)
    error = caught.value
    assert (error.field, error.exit_status, error.center) == ("queue", 1, "centera")
    assert error.stderr.startswith("sbatch: error: invalid partition specified: nosuchpartition")
    assert "Invalid partition name specified" in error.message
