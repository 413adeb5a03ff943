"""PBS parsers over recorded and documented output of both dialects, and the state maps."""

from __future__ import annotations

import calendar
import json
import os
import subprocess
from pathlib import Path

import pytest

from adapters.base import JobRequest, JobState
from adapters.batch.jobdir import JobDir
from adapters.errors import CenterUnavailable
from adapters.pbs.adapter import PbsAdapter
from adapters.pbs.commands import (
    build_element_query,
    build_qdel_command,
    build_qstat_command,
    qdel_refused_because_finished,
    qsub_rejection,
)
from adapters.pbs.parse import (
    PBSPRO_STATES,
    TORQUE_STATES,
    element_index,
    match_ids,
    parse_pbspro_json,
    parse_pbspro_qstat,
    parse_qstat_blocks,
    parse_torque_qstat,
    pbs_exit_code,
    pbs_status,
)
from adapters.transport.keys import KeyFile
from adapters.transport.ssh import CommandResult, SSHPool, SSHTarget

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "pbs"
GID = "0b5b8a5e-8d4c-4c5e-9a43-3f1b2d6c7e8f"

TORQUE_EXPECTED = {
    "Q": JobState.QUEUED,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,
    "C": JobState.COMPLETED,
    "H": JobState.HELD,
    "W": JobState.QUEUED,
    "T": JobState.QUEUED,
    "S": JobState.SUSPENDED,
    "U": JobState.UNKNOWN,
}
PBSPRO_EXPECTED = {
    "Q": JobState.QUEUED,
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,
    "B": JobState.RUNNING,
    "F": JobState.COMPLETED,
    "X": JobState.COMPLETED,
    "H": JobState.HELD,
    "W": JobState.QUEUED,
    "T": JobState.QUEUED,
    "M": JobState.QUEUED,
    "S": JobState.SUSPENDED,
    "U": JobState.SUSPENDED,
}


def read(name: str) -> str:
    return (FIXTURES / name).read_text()


def summary(statuses: dict) -> dict:
    return {k: (s.state, s.native_state, s.exit_code) for k, s in statuses.items()}


def utc(year: int, month: int, day: int, hour: int, minute: int, second: int) -> float:
    return float(calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)))


def times(statuses: dict) -> dict:
    return {k: (s.started_at, s.ended_at) for k, s in statuses.items()}


@pytest.mark.parametrize(
    "table,expected", [(TORQUE_STATES, TORQUE_EXPECTED), (PBSPRO_STATES, PBSPRO_EXPECTED)]
)
def test_every_pbs_state_letter_maps_to_exactly_one_state(table: dict, expected: dict) -> None:
    assert table == expected


def test_unmapped_letter_is_unknown_with_the_letter_kept() -> None:
    status = parse_torque_qstat("Job Id: 9.srv\n    job_state = Z\n")["9.srv"]
    assert (status.state, status.native_state) == (JobState.UNKNOWN, "Z")


def test_recorded_slurm_torque_wrapper_output() -> None:
    statuses = summary(parse_torque_qstat(read("torque_slurm_qstat_f_mixed.txt")))
    assert statuses == {
        "16": (JobState.RUNNING, "R", None),
        "17": (JobState.QUEUED, "Q", None),  # held, but the wrapper only says Q
        # Finished however they ended, and no exit status: the job dir decides.
        "18": (JobState.COMPLETED, "C", None),
        "19": (JobState.COMPLETED, "C", None),
        "20": (JobState.COMPLETED, "C", None),
        "21": (JobState.RUNNING, "R", None),
    }


def test_slurms_wrapper_tells_start_in_mtime_and_end_in_ctime() -> None:
    # Recorded under the testbed's UTC; the status command asks for UTC anyway.
    assert times(parse_torque_qstat(read("torque_slurm_qstat_f_mixed.txt"))) == {
        "16": (utc(2026, 11, 22, 3, 8, 3), None),  # running: its ctime is a forecast
        "17": (None, None),  # queued
        "18": (utc(2026, 11, 22, 3, 8, 3), utc(2026, 11, 22, 3, 8, 3)),
        "19": (utc(2026, 11, 22, 3, 8, 6), utc(2026, 11, 22, 3, 8, 7)),
        "20": (utc(2026, 11, 22, 3, 8, 6), utc(2026, 11, 22, 3, 8, 6)),
        "21": (utc(2026, 11, 22, 3, 8, 6), None),
    }


def test_torque_tells_start_time_and_comp_time() -> None:
    found = times(parse_torque_qstat(read("torque_qstat_f_server.txt")))
    # ctime and mtime are the job's creation and last change on a real Torque: not used.
    assert found["4242.head.cluster.example"] == (
        utc(2024, 3, 4, 10, 0, 2),
        utc(2024, 3, 4, 10, 10, 7),
    )
    assert found["4243.head.cluster.example"] == (None, utc(2024, 3, 4, 10, 1, 4))
    assert found["4245.head.cluster.example"] == (None, None)
    assert found["4246.head.cluster.example"] == (None, None)


def test_qstat_blocks_keep_attributes_and_join_wrapped_values() -> None:
    blocks = parse_qstat_blocks(read("torque_qstat_f_server.txt"))
    job = blocks["4242.head.cluster.example"]
    assert job["Resource_List.nodes"] == "1:ppn=4"
    assert job["Variable_List"].endswith("PBS_O_HOST=login1.cluster.example")
    assert "PBS_O_SHELL=/bin/bash," in job["Variable_List"]
    assert "\t" not in job["Variable_List"]


def test_torque_server_output_with_exit_status_and_arrays() -> None:
    statuses = parse_torque_qstat(read("torque_qstat_f_server.txt"))
    assert summary(statuses) == {
        "4242.head.cluster.example": (JobState.COMPLETED, "C", 0),
        "4243.head.cluster.example": (JobState.FAILED, "C", 3),
        "4244.head.cluster.example": (JobState.FAILED, "C", 143),  # 256 + SIGTERM
        "4245.head.cluster.example": (JobState.RUNNING, "R", None),
        "4246.head.cluster.example": (JobState.QUEUED, "Q", None),
        "4247.head.cluster.example": (JobState.HELD, "H", None),
        "4250[].head.cluster.example": (JobState.RUNNING, "R", None),
        "4250[1].head.cluster.example": (JobState.COMPLETED, "C", 0),
        "4250[2].head.cluster.example": (JobState.RUNNING, "E", None),
    }
    assert statuses["4246.head.cluster.example"].reason.startswith("Not Running:")


def test_empty_pbspro_answer_means_no_job_known() -> None:
    assert parse_pbspro_json("") == {}
    assert parse_pbspro_json('{"timestamp":1,"pbs_version":"x","pbs_server":"s"}') == {}


@pytest.mark.parametrize("status,code", [(0, 0), (3, 3), (271, 143), (265, 137), (-29, -29)])
def test_pbs_signal_exit_status_becomes_a_shell_exit_code(status: int, code: int) -> None:
    assert pbs_exit_code(status) == code


def test_ids_match_whatever_server_suffix_qstat_prints() -> None:
    reported = parse_torque_qstat(read("torque_qstat_f_server.txt"))
    found = match_ids(["4243.head", "4250[1].head", "4242.head.cluster.example", "9"], reported)
    assert set(found) == {"4243.head", "4250[1].head", "4242.head.cluster.example"}
    assert found["4243.head"].native_id == "4243.head"
    assert found["4250[1].head"].exit_code == 0


def test_status_commands_per_dialect_ask_for_utc_times() -> None:
    assert build_qstat_command(["1", "2"], "torque") == "TZ=UTC0 qstat -f 1 2"
    pbspro = build_qstat_command(["5110[].pbs01", "5111.pbs01"], "pbspro")
    # Text for several ids (JSON lists only the first); -x only where history is kept.
    assert pbspro.endswith("; TZ=UTC0 qstat -f -w $h -t '5110[].pbs01' 5111.pbs01")
    assert "qstat -Bf" in pbspro and "job_history_enable = True' && h=-x" in pbspro
    assert "TZ=UTC0 qstat -f $ids" in build_element_query()


def adapter(dialect: str) -> PbsAdapter:
    target = SSHTarget("centerc", "127.0.0.1", 22203, "alice", KeyFile("/k"), ("ssh-ed25519 AAAA",))
    return PbsAdapter(target, SSHPool(), dialect=dialect)


def test_unknown_ids_are_not_an_error_but_other_failures_are() -> None:
    pbs = adapter("torque")
    unknown = CommandResult(153, read("torque_slurm_qstat_f_unknown.txt").encode(), b"")
    assert pbs.parse_status(unknown, ["99998"]) == {}
    with pytest.raises(CenterUnavailable, match="qstat failed"):
        pbs.parse_status(CommandResult(255, b"", b"Problem loading jobs.\n"), ["1"])


def test_pbspro_answer_with_one_unknown_id_still_reports_the_others() -> None:
    pbs = adapter("pbspro")
    result = CommandResult(
        153,
        read("openpbs_qstat_f_w_x_t_multi.txt").encode(),
        read("pbspro_qstat_unknown.stderr.txt").encode(),
    )
    statuses = pbs.parse_status(result, ["4.pbshost", "5199.pbs01", "11.pbshost"])
    assert list(statuses) == ["4.pbshost", "11.pbshost"]


def test_dialect_is_checked() -> None:
    with pytest.raises(ValueError, match="dialect"):
        adapter("lsf")


def test_qdel_marks_the_job_dir_only_after_it_was_accepted() -> None:
    command = build_qdel_command("5110[].pbs01", JobDir("/home/alice/.hpcfed", GID))
    assert command.startswith("qdel '5110[].pbs01' && { printf 'cancelled\\n' > ")


@pytest.mark.parametrize(
    "stdout,stderr,gone",
    [
        ("", "", True),  # Slurm's qdel: silent non-zero exit for finished or unknown jobs
        ("", "qdel: Unknown Job Id 12.srv\n", True),
        ("", "qdel: Job has finished 12.srv\n", True),
        ("", "qdel: Request invalid for state of job MSG=invalid state for job - COMPLETE\n", True),
        ("qdel: Kill job error on job id 12: Access/permission denied\n", "", False),
        ("", "qdel: Unauthorized Request 12.srv\n", False),
    ],
)
def test_qdel_of_a_finished_job_is_not_an_error(stdout: str, stderr: str, gone: bool) -> None:
    result = CommandResult(1, stdout.encode(), stderr.encode())
    assert qdel_refused_because_finished(result) is gone


def test_an_array_and_the_elements_qstat_lists_beside_it_are_one_status() -> None:
    reported = parse_pbspro_json(read("openpbs_array_job.qstat_f_F_json.json"))
    status = match_ids(["10[].pbshost"], reported)["10[].pbshost"]
    assert [(e.index, e.native_id, e.state, e.exit_code) for e in status.elements] == [
        (i, f"10[{i}].pbshost", JobState.COMPLETED, 0) for i in range(4)
    ]
    assert status.state is JobState.COMPLETED
    torque = match_ids(["4250[].head"], parse_torque_qstat(read("torque_qstat_f_server.txt")))
    assert [e.index for e in torque["4250[].head"].elements] == [1, 2]


@pytest.mark.parametrize(
    "element_id,found",
    [
        ("4250[1].head.cluster.example", ("4250[]", 1)),
        ("5110[12].pbs01", ("5110[]", 12)),
        ("5110[].pbs01", None),
        ("5111.pbs01", None),
        ("71", None),  # Slurm's qstat: an element is a job like any other
    ],
)
def test_element_ids_name_their_array_and_index(element_id: str, found) -> None:
    assert element_index(element_id) == found


@pytest.mark.parametrize(
    "dialect,status,state",
    [
        ("torque", -11, JobState.TIMEOUT),  # JOB_EXEC_OVERLIMIT_WT
        ("torque", -10, JobState.FAILED),  # JOB_EXEC_OVERLIMIT_MEM
        ("torque", -3, JobState.FAILED),  # JOB_EXEC_RETRY and others: it never ran
        ("pbspro", -29, JobState.TIMEOUT),  # JOB_EXEC_KILL_WALLTIME
        ("pbspro", -27, JobState.FAILED),  # JOB_EXEC_KILL_MEM
        ("pbspro", 271, JobState.FAILED),  # SIGTERM: the job dir tells a walltime kill apart
    ],
)
def test_server_exit_statuses_say_how_the_job_was_ended(dialect: str, status: int, state) -> None:
    result = pbs_status("7.srv", "C" if dialect == "torque" else "F", status, None, dialect)
    assert result.state is state
    if status < 0:
        assert result.reason


def test_the_element_query_asks_qstat_only_about_recorded_ids_never_a_shell(
    tmp_path: Path,
) -> None:
    # A stand-in qstat on PATH prints the arguments it got; the filter is what is tested.
    (tmp_path / "qstat").write_text('#!/bin/sh\nprintf "[%s]" "$@"; echo\n')
    (tmp_path / "qstat").chmod(0o755)
    (tmp_path / "4250[1].head").write_text("")  # a file a glob of the id would match
    markers = (
        f"{GID}/started.1:4250[1].head\n"
        f"{GID}/started.2:71\n"
        f"{GID}/started.3:$(touch pwned) `touch pwned`\n"
        f"{GID}/exit_code.2:0\n"
        f"{GID}/started.4:\n"
    )
    env = {"PATH": f"{tmp_path}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["sh", "-c", build_element_query()],
        input=markers.encode(),
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=30,
    )
    assert out.stdout.decode() == "[-f][4250[1].head][71]\n--hpcfed-markers-- 0\n"
    assert not (tmp_path / "pwned").exists()
    none = subprocess.run(["sh", "-c", build_element_query()], input=b"", capture_output=True)
    assert none.stdout == b"--hpcfed-markers-- 0\n"  # no element started: qstat not run


WRAPPER_REJECTED = json.loads((FIXTURES / "torque_slurm_qsub_rejected.json").read_text())["cases"]
WRAPPER_JOBS = {
    "bad_queue": ({"queue": "nosuchqueue"}, "queue"),
    "walltime_over_queue_max": ({"walltime_seconds": 72 * 3600}, "resources.walltime"),
    "too_many_nodes": ({"nodes": 5}, "resources.nodes"),  # sbatch says "processors"
    "too_many_cpus": ({"tasks_per_node": 64}, "resources.tasks_per_node"),
    "too_much_memory": ({"memory_per_node_mib": 999999}, "resources.memory_per_node"),
    "bad_dependency": ({"dependencies": [("afterok", "0")]}, "dependencies"),
    "array_too_large": ({"array": "0-100000"}, "array"),
}


@pytest.mark.parametrize("case", WRAPPER_REJECTED, ids=[c["case"] for c in WRAPPER_REJECTED])
def test_slurms_qsub_refusal_is_read_from_stdout_and_names_the_field(case: dict) -> None:
    fields, field = WRAPPER_JOBS[case["case"]]
    job = JobRequest(gateway_id=GID, name="r", command="true", **fields)
    result = CommandResult(case["exit_status"], case["stdout"].encode(), case["stderr"].encode())
    said, found = qsub_rejection(result, job)
    assert found == field
    assert said.startswith("sbatch: error: ")  # the wrapper's own words left out
    assert "The command was" not in said and "'" not in said


PBS_WRITTEN = json.loads((FIXTURES / "pbs_qsub_rejected.json").read_text())["cases"]
PBS_WRITTEN_FIELDS = {
    "torque_unknown_queue": "queue",
    "torque_no_feasible_nodes": "resources.nodes",
    "pbspro_unknown_queue": "queue",
    "pbspro_bad_array": "array",
    "pbspro_over_limits": None,
}


@pytest.mark.parametrize("case", PBS_WRITTEN, ids=[c["case"] for c in PBS_WRITTEN])
def test_torque_and_pbspro_refusals_name_the_field(case: dict) -> None:
    job = JobRequest(gateway_id=GID, name="r", command="true")
    said, field = qsub_rejection(CommandResult(1, b"", case["stderr"].encode()), job)
    assert (said, field) == (case["stderr"].strip(), PBS_WRITTEN_FIELDS[case["case"]])


# ------------------------------------------------ real OpenPBS 23.06 output (fixtures README)

OPENPBS_JOBS = {  # what the server said of each job: state letter, Exit_status, times (UTC)
    "4.pbshost": (JobState.COMPLETED, "F", 0, (6, 20, 26), (6, 20, 32)),
    "10[].pbshost": (JobState.COMPLETED, "F", 0, (6, 22, 20), (6, 22, 25)),
    "10[0].pbshost": (JobState.COMPLETED, "F", 0, (6, 22, 20), (6, 22, 23)),
    "10[1].pbshost": (JobState.COMPLETED, "F", 0, (6, 22, 20), (6, 22, 23)),
    "10[2].pbshost": (JobState.COMPLETED, "F", 0, (6, 22, 23), (6, 22, 25)),
    "10[3].pbshost": (JobState.COMPLETED, "F", 0, (6, 22, 23), (6, 22, 25)),
    "11.pbshost": (JobState.TIMEOUT, "F", -29, (6, 22, 35), (6, 23, 36)),
}


def openpbs_summary(statuses: dict) -> dict:
    def hms(t: float | None) -> tuple[int, int, int] | None:
        return None if t is None else (int(t) // 3600 % 24, int(t) // 60 % 60, int(t) % 60)

    return {
        k: (s.state, s.native_state, s.exit_code, hms(s.started_at), hms(s.ended_at))
        for k, s in statuses.items()
    }


@pytest.mark.parametrize(
    "name,ids",
    [
        ("openpbs_finished_job.qstat_f_F_json.json", ["4.pbshost"]),
        ("openpbs_array_job.qstat_f_F_json.json", [f"10[{i}].pbshost" for i in ("", 0, 1, 2, 3)]),
        ("openpbs_walltime_exceeded.qstat_f_F_json.json", ["11.pbshost"]),
    ],
)
def test_real_openpbs_json_of_one_id(name: str, ids: list[str]) -> None:
    found = openpbs_summary(parse_pbspro_json(read(name)))
    assert found == {i: OPENPBS_JOBS[i] for i in ids}


def test_real_openpbs_walltime_kill_says_so() -> None:
    (status,) = parse_pbspro_json(read("openpbs_walltime_exceeded.qstat_f_F_json.json")).values()
    assert status.reason == "walltime exceeded (JOB_EXEC_KILL_WALLTIME)"


def test_real_openpbs_answer_with_history_off_knows_no_job() -> None:
    # `qstat -x` with job_history_enable unset: a document without `Jobs`, exit 0.
    assert parse_pbspro_json(read("openpbs_history_off_or_missing.qstat_f_F_json.json")) == {}


def test_one_json_document_per_id_printed_one_after_another_are_all_read() -> None:
    # The per-id re-query prints one document per qstat run, a history-off one included.
    names = [
        "openpbs_finished_job.qstat_f_F_json.json",
        "openpbs_history_off_or_missing.qstat_f_F_json.json",
        "openpbs_walltime_exceeded.qstat_f_F_json.json",
    ]
    found = parse_pbspro_json("".join(read(n) for n in names))
    assert set(found) == {"4.pbshost", "11.pbshost"}


def test_multi_id_text_answer_lists_every_job_as_the_json_of_each_does() -> None:
    text = read("openpbs_qstat_f_w_x_t_multi.txt")
    assert openpbs_summary(parse_pbspro_qstat(text)) == OPENPBS_JOBS
    one_by_one = {}
    for name in (
        "openpbs_finished_job.qstat_f_F_json.json",
        "openpbs_array_job.qstat_f_F_json.json",
        "openpbs_walltime_exceeded.qstat_f_F_json.json",
    ):
        one_by_one.update(parse_pbspro_json(read(name)))
    assert parse_pbspro_qstat(text) == one_by_one


def test_multi_id_text_answer_makes_an_array_of_its_elements() -> None:
    statuses = PbsAdapter.parse_status(
        adapter("pbspro"),
        CommandResult(0, read("openpbs_qstat_f_w_x_t_multi.txt").encode(), b""),
        ["4.pbshost", "10[].pbshost", "11.pbshost"],
    )
    assert [e.index for e in statuses["10[].pbshost"].elements] == [0, 1, 2, 3]
    assert (statuses["4.pbshost"].state, statuses["11.pbshost"].state) == (
        JobState.COMPLETED,
        JobState.TIMEOUT,
    )


def test_a_json_answer_cut_short_is_no_evidence() -> None:
    text = read("openpbs_finished_job.qstat_f_F_json.json")
    assert adapter("pbspro").parse_accounting(text[: len(text) // 2], "", ["4.pbshost"]) == {}
    assert set(adapter("pbspro").parse_accounting(text, "", ["4.pbshost"])) == {"4.pbshost"}


# ------------------------------------------------ a refusal that names no limit

#: What OpenPBS 23.06's qsub printed for a walltime above its queue's limit
#: (../shared/fixtures/openpbs/README.md, fact 4).
OVER_LIMITS = "qsub: Job violates queue and/or server resource limits\n"


def _queues() -> dict:
    from adapters.pbs.load import parse_load

    # `workq` (the default): 72 h, 2 nodes a job, 64 cores; `gpuq`: 24 h, 4 GPUs a node.
    load = parse_load(read("load-pbspro_server.txt"), 0.0, "pbspro", None)
    return {p.name: p for p in load.partitions}


@pytest.mark.parametrize(
    "asked,queue,field",
    [
        ({"walltime_seconds": 100 * 3600}, None, "resources.walltime"),  # the default workq
        ({"walltime_seconds": 48 * 3600}, "gpuq", "resources.walltime"),
        ({"walltime_seconds": 48 * 3600}, None, None),  # within workq's 72 h
        ({"nodes": 3}, None, "resources.nodes"),
        ({"tasks_per_node": 65}, None, "resources.tasks_per_node"),
        ({"cpus_per_task": 65}, None, "resources.cpus_per_task"),
        ({"memory_per_node_mib": 600_000}, "gpuq", "resources.memory_per_node"),
        ({"gpus_per_node": 5}, "gpuq", "resources.gpus_per_node"),
    ],
)
def test_a_refusal_over_unnamed_limits_names_the_field_over_the_queues_limit(
    asked: dict, queue: str | None, field: str | None
) -> None:
    from adapters.batch.rejections import field_over_limits, job_partition, names_no_limit

    job = JobRequest(gateway_id=GID, name="r", command="true", queue=queue, **asked)
    said, named = qsub_rejection(CommandResult(1, b"", OVER_LIMITS.encode()), job)
    assert named is None and names_no_limit(said)  # the message alone names nothing
    queues = _queues()
    partition = job_partition(tuple(queues.values()), job.queue)
    assert partition is not None and partition.name == (queue or "workq")
    assert field_over_limits(job, partition) == field


def test_no_partition_for_an_unknown_queue() -> None:
    from adapters.batch.rejections import job_partition

    assert job_partition(tuple(_queues().values()), "nosuchq") is None


def test_a_queued_job_that_can_never_run_shows_the_servers_comment_as_its_reason() -> None:
    """OpenPBS keeps such a job queued, its `comment` saying why (README fact 3: the
    comment below is what that server printed for 64 cores asked of its 2). The document
    is the recorded one of job 4, put back in the state it had while it waited."""
    never = "Can Never Run: Insufficient amount of resource: ncpus (R: 64 A: 2 T: 2)"
    doc = json.loads(read("openpbs_finished_job.qstat_f_F_json.json"), strict=False)
    job = doc["Jobs"]["4.pbshost"]
    job.update(job_state="Q", comment=never)
    for gone in ("Exit_status", "stime", "obittime", "exec_host", "exec_vnode", "resources_used"):
        job.pop(gone, None)
    status = match_ids(["4.pbshost"], parse_pbspro_json(json.dumps(doc)))["4.pbshost"]
    assert (status.state, status.native_state, status.reason) == (JobState.QUEUED, "Q", never)
