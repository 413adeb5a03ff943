"""Slurm output parsers over output recorded from a real cluster, and the state map."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.base import JobRequest, JobState
from adapters.batch.jobdir import JobDir
from adapters.errors import SubmitRejected
from adapters.slurm.adapter import (
    SlurmAdapter,
    build_cancel_command,
    cancel_refused_because_finished,
    sbatch_rejection,
)
from adapters.slurm.script import slurm_time
from adapters.slurm.status import (
    SLURM_STATES,
    build_sacct_command,
    build_squeue_command,
    current_reason,
    parse_sacct,
    parse_squeue,
    parse_squeue_comments,
    slurm_epoch,
    slurm_state,
    wait_status_exit_code,
)
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

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


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


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
    assert seen["1758"] == (JobState.RUNNING, "RUNNING", None, None)
    assert seen["1759"] == (JobState.HELD, "PENDING", "JobHeldUser", None)
    assert seen["1760"] == (JobState.QUEUED, "PENDING", "BeginTime", None)
    assert seen["1761"] == (JobState.COMPLETED, "COMPLETED", None, 0)
    assert seen["1762"] == (JobState.FAILED, "FAILED", "NonZeroExitCode", 3)
    assert seen["1756"] == (JobState.FAILED, "FAILED", "NonZeroExitCode", 7)
    assert seen["1764"] == (JobState.CANCELLED, "CANCELLED", None, None)
    # Cancelled while it waited for its begin time: that reason no longer applies.
    assert seen["1765"] == (JobState.CANCELLED, "CANCELLED", None, None)
    assert seen["1766"] == (JobState.TIMEOUT, "TIMEOUT", "TimeLimit", None)
    assert seen["1763"] == (JobState.FAILED, "FAILED", "JobLaunchFailure", 137)  # SIGKILL
    assert len(statuses) == len(read("squeue_mixed.txt").splitlines())


def test_recorded_squeue_output_says_when_each_job_ran() -> None:
    statuses = parse_squeue(read("squeue_mixed.txt"))
    ran = {nid: (s.started_at, s.ended_at) for nid, s in statuses.items()}
    assert ran["1761"] == (1796146595.0, 1796146596.0)
    assert ran["1766"] == (1796146595.0, 1796146661.0)  # TIMEOUT
    assert ran["1764"] == (1796146595.0, 1796146598.0)  # cancelled
    # Running: its start; the end squeue prints is what its time limit forecasts.
    assert ran["1758"] == (1796146595.0, None)
    # Pending: squeue's StartTime is a forecast (1760's), or N/A (1759, held).
    assert ran["1760"] == ran["1759"] == (None, None)
    # Cancelled before they started: Slurm stamps the cancel as start and end.
    assert ran["1765"] == (None, 1796146598.0)
    assert ran["1757"] == (None, 1796146595.0)


@pytest.mark.parametrize(
    "text,epoch",
    [
        ("1796144400", 1796144400.0),  # SLURM_TIME_FORMAT=%s: epoch seconds, no zone
        (" 1796144400 ", 1796144400.0),
        ("N/A", None),
        ("Unknown", None),
        ("None", None),
        ("", None),
        ("0", None),
        # A local time the format was not applied to: in a zone the gateway cannot know.
        ("2026-12-01T17:00:00", None),
        ("Tomorr 17:00", None),
        ("\u00b2", None),  # a digit to str.isdigit, not to float
    ],
)
def test_slurm_times_are_epoch_seconds(text: str, epoch: float | None) -> None:
    assert slurm_epoch(text) == epoch


def test_squeue_comments_give_gateway_ids() -> None:
    found = parse_squeue_comments(read("squeue_mixed.txt"))
    assert found["8ab87c1c-8644-4928-9c56-6de0b476011d"] == "1758"
    assert found["ef1a97d5-e8ad-4937-8f2c-8fbe5d208ea3"] == "1759"
    assert found["2b7bce65-1db8-4784-bf4f-4bda412e955b"] == "1755"
    assert "(null)" not in "".join(found)
    assert len(found) == 5


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
    ran = {nid: (s.started_at, s.ended_at) for nid, s in statuses.items()}
    assert ran["101"] == (utc("2024-03-04T10:00:02"), utc("2024-03-04T10:10:07"))
    assert ran["104"] == (utc("2024-03-04T09:00:00"), utc("2024-03-04T10:00:31"))
    assert ran["107"] == (None, None)  # Unknown
    assert ran["110"] == (None, utc("2024-03-04T10:09:00"))  # cancelled while pending
    assert statuses["108"].elements[0].ended_at == utc("2024-03-04T10:07:01")


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


def test_status_and_history_commands_ask_for_epoch_times() -> None:
    assert build_squeue_command("alice") == (
        "SLURM_TIME_FORMAT=%s squeue -h -t all -u alice "
        "-O 'JobArrayID:|,State:|,Reason:|,exit_code:|,StartTime:|,EndTime:|,Comment:'"
    )
    assert build_squeue_command("a b").startswith("SLURM_TIME_FORMAT=%s squeue -h -t all -u 'a b' ")
    assert build_sacct_command(["1", "2_3"]) == (
        "SLURM_TIME_FORMAT=%s sacct -X --parsable2 --noheader "
        "--format=JobID,State,ExitCode,Reason,Start,End -j 1,2_3"
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
    assert summary["1767"] == [
        (0, "1767_0", JobState.COMPLETED, None, 0),
        (1, "1767_1", JobState.FAILED, "NonZeroExitCode", 3),
        (2, "1767_2", JobState.RUNNING, None, None),
        (3, "1767_3", JobState.CANCELLED, None, None),
        (4, "1767_4", JobState.RUNNING, None, None),
        (5, "1767_5", JobState.QUEUED, "JobArrayTaskLimit", None),  # one left: "1767_5"
    ]
    # Pending ranges, expanded: "1768_[1,3,6-7]" (5 was cancelled) and "1769_[0-14:2%3]".
    assert [e.index for e in statuses["1768"].elements] == [1, 3, 6, 7]
    assert [e.index for e in statuses["1769"].elements] == list(range(0, 15, 2))
    assert {e.state for e in statuses["1769"].elements} == {JobState.HELD}
    assert statuses["1769"].state is JobState.HELD
    assert statuses["1767"].state is JobState.RUNNING
    assert (statuses["1770"].state, statuses["1770"].elements) == (JobState.RUNNING, ())


def test_recorded_squeue_arrays_give_each_element_its_own_times() -> None:
    array = parse_squeue(read("squeue_arrays.txt"))["1767"]
    assert [(e.index, e.started_at, e.ended_at) for e in array.elements] == [
        (0, 1796146664.0, 1796146664.0),
        (1, 1796146664.0, 1796146664.0),
        (2, 1796146667.0, None),
        (3, 1796146667.0, 1796146670.0),  # cancelled, ran 3 s
        (4, 1796146670.0, None),
        (5, None, None),
    ]
    # Running still: since its first element started, and no end yet.
    assert (array.started_at, array.ended_at) == (1796146664.0, None)


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
    status = parse_squeue(f"{listed}|PENDING|JobArrayTaskLimit|0|N/A|N/A|hpcfed:x\n")["123"]
    assert [e.index for e in status.elements] == indices
    assert all(e.native_id == f"123_{e.index}" for e in status.elements)


def test_an_arrays_comment_gives_the_arrays_own_id() -> None:
    found = parse_squeue_comments(read("squeue_arrays.txt"))
    assert found["f7bbc024-de6c-47da-a3cd-506f8e2c5bf0"] == "1767"
    assert found["d24f1030-8b36-47ec-b996-fb8416bb9b08"] == "1768"
    assert found["3a861a7d-9136-4305-89d3-b4ff5edd3e2e"] == "1769"
    assert found["0820450d-7d85-4244-890e-53edcb593f6f"] == "1770"


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
#: What each recorded refusal points at (centerd's: enforced associations, limits, QoS).
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
    # dora has no association at centerd: naming no account, her job has none to go to.
    "no_association": "center",
    "no_association_named_account": "account",
    "qos_walltime_over_limit": "resources.walltime",
    "qos_cpus_over_limit": "resources.tasks_per_node",
    "assoc_cpus_over_limit": "resources.tasks_per_node",
    "assoc_submit_limit": "account",
    # Refused extra directives: the one whose option the message names, else the one
    # directive there is, else the list.
    "directive_unrecognized_option": "extra_directives.slurm[0]",
    "directive_bad_time": "extra_directives.slurm[0]",
    "directive_bad_node": "extra_directives.slurm[0]",
    "directive_bad_feature": "extra_directives.slurm[0]",
    "directives_two_one_bad_feature": "extra_directives.slurm",
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
    "no_association": {},
    "no_association_named_account": {"account": "physics"},
    "qos_walltime_over_limit": {"qos": "short", "walltime_seconds": 1200},
    "qos_cpus_over_limit": {"qos": "short", "tasks_per_node": 2},
    "assoc_cpus_over_limit": {"account": "chemistry", "qos": "short", "tasks_per_node": 2},
    "assoc_submit_limit": {"account": "chemistry"},
    "directive_unrecognized_option": {"extra_directives": ("--bogus",)},
    "directive_bad_time": {"extra_directives": ("--time=abc",), "walltime_seconds": 60},
    "directive_bad_node": {"extra_directives": ("-x nosuchnode",)},
    "directive_bad_feature": {"extra_directives": ("--constraint=nope",)},
    "directives_two_one_bad_feature": {"extra_directives": ("--exclusive", "--constraint=nope")},
}


def test_every_recorded_refusal_has_an_expected_field() -> None:
    assert {c["case"] for c in REJECTED} == set(REJECTED_FIELDS) == set(REJECTED_JOBS)


@pytest.mark.parametrize("case", REJECTED, ids=[c["case"] for c in REJECTED])
def test_sbatch_refusal_names_the_spec_field_it_points_at(case: dict) -> None:
    job = JobRequest(gateway_id=GID, name="r", command="true", **REJECTED_JOBS[case["case"]])
    result = CommandResult(case["exit_status"], case["stdout"].encode(), case["stderr"].encode())
    login = case.get("login", "alice")
    said, field = sbatch_rejection(result, job, login, case["center"])
    assert field == REJECTED_FIELDS[case["case"]]
    if field == "center":
        assert said.startswith(f"login {login} has no association at {case['center']}: ")
        assert said.endswith(case["stderr"].strip())
    else:
        assert said == case["stderr"].strip() and "\n\n" not in said


def test_accounting_policy_refusals_name_the_limit_first() -> None:
    """The policy line is the same for every limit; the line before it says which."""
    policy = [c for c in REJECTED if "violates accounting/QOS policy" in c["stderr"]]
    assert len(policy) == 4
    for case in policy:
        first = case["stderr"].splitlines()[0]
        assert first.startswith("sbatch: error: ") and first.endswith("Limit"), first


def test_invalid_account_of_a_named_account_is_not_called_a_missing_association() -> None:
    case = next(c for c in REJECTED if c["case"] == "no_association_named_account")
    result = CommandResult(1, b"", case["stderr"].encode())
    job = JobRequest(gateway_id=GID, name="r", command="true", account="physics")
    said, field = sbatch_rejection(result, job, "dora", "centerd")
    assert (said, field) == (case["stderr"].strip(), "account")


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


def test_a_job_cancelled_while_pending_loses_its_pending_reason() -> None:
    """Slurm keeps the last pending reason on the record of a job cancelled while it
    waited (recorded at centerd: a job over its account's GrpTRES=cpu=2)."""
    pending, cancelled = (FIXTURES / "squeue_cancelled_pending.txt").read_text().splitlines()
    waiting = parse_squeue(pending)["8"]
    assert (waiting.state, waiting.reason) == (JobState.QUEUED, "AssocGrpCpuLimit")
    ended = parse_squeue(cancelled)["8"]
    assert (ended.state, ended.native_state, ended.reason) == (
        JobState.CANCELLED,
        "CANCELLED",
        None,
    )
    record = parse_sacct((FIXTURES / "sacct_cancelled_pending.txt").read_text())["8"]
    assert (record.state, record.reason, record.exit_code) == (JobState.CANCELLED, None, None)


@pytest.mark.parametrize(
    ("state", "reason", "kept"),
    [
        (JobState.FAILED, "NonZeroExitCode", "NonZeroExitCode"),
        (JobState.TIMEOUT, "TimeLimit", "TimeLimit"),
        (JobState.FAILED, "NodeDown", "NodeDown"),
        (JobState.CANCELLED, "DependencyNeverSatisfied", "DependencyNeverSatisfied"),
        (JobState.CANCELLED, "QOSMaxWallDurationPerJobLimit", None),
        (JobState.CANCELLED, "Priority", None),
        (JobState.CANCELLED, "JobHeldUser", None),
        (JobState.QUEUED, "AssocGrpCpuLimit", "AssocGrpCpuLimit"),
    ],
)
def test_only_reasons_that_still_apply_are_kept(
    state: JobState, reason: str, kept: str | None
) -> None:
    assert current_reason(state, reason) == kept


def test_a_pending_job_that_can_never_run_keeps_slurms_reason() -> None:
    """Its parent failed, so its afterok can never be met: Slurm keeps it pending, and
    the reason is what the job shows (recorded on centera)."""
    status = parse_squeue(read("squeue_never_runs.txt"))["283"]
    assert (status.state, status.native_state, status.reason) == (
        JobState.QUEUED,
        "PENDING",
        "DependencyNeverSatisfied",
    )
