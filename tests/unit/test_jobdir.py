"""The job directory: rendering the job body (run for real by bash), marker files, settling."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from adapters.base import NOT_LISTED, JobRequest, JobState, NativeStatus
from adapters.batch.jobdir import (
    JobDir,
    SpecRefused,
    check_request,
    grouped_dependencies,
    render_body,
    render_user_script,
    reserved_directive,
    resolve_path,
)
from adapters.batch.markers import (
    ElementMarkers,
    JobMarkers,
    Termination,
    all_markers_command,
    markers_command,
    parse_markers,
    parse_times,
)
from adapters.batch.settle import (
    LEFT_QUEUE,
    needs_job_dir,
    settle,
    settle_array,
    status_from_markers,
)
from adapters.slurm.status import SLURM_ID_RE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
GID = "0b5b8a5e-8d4c-4c5e-9a43-3f1b2d6c7e8f"
HOSTILE = {
    "SEMI": "; rm -rf ~",
    "SUBST": "$(touch pwned-by-subst)",
    "TICKS": "`touch pwned-by-ticks`",
    "QUOTES": 'it\'s "quoted" \\ back',
    "NEWLINE": "first\nsecond",
    "DOLLAR": "$HOME ${PATH}",
    "EMPTY": "",
}


def lay_out(tmp_path: Path, job: JobRequest, redirect_output: bool = False) -> JobDir:
    """The job dir as the adapter lays it out."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    jobdir = JobDir(str(tmp_path / "root"), job.gateway_id)
    Path(jobdir.path).mkdir(parents=True, exist_ok=True)
    body = render_body(job, jobdir, str(home), redirect_output=redirect_output)
    Path(jobdir.file("job.sh")).write_text("#!/bin/bash\n" + body)
    script = Path(jobdir.file("script"))
    script.write_text(render_user_script(job))
    script.chmod(0o700)
    return jobdir


def run_job(tmp_path: Path, job: JobRequest) -> tuple[int, JobDir]:
    """Lay out the job dir and run job.sh with bash, no scheduler."""
    jobdir = lay_out(tmp_path, job)
    with open(jobdir.file("stdout"), "wb") as out, open(jobdir.file("stderr"), "wb") as err:
        proc = subprocess.run(
            ["bash", jobdir.file("job.sh")], cwd=tmp_path, stdout=out, stderr=err, timeout=30
        )
    return proc.returncode, jobdir


def run_element(tmp_path: Path, job: JobRequest, env: dict[str, str]) -> tuple[int, JobDir, str]:
    """One array element as a PBS center runs it: job.sh sends its output to the job dir."""
    jobdir = lay_out(tmp_path, job, redirect_output=True)
    proc = subprocess.run(
        ["bash", jobdir.file("job.sh")],
        cwd=tmp_path,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        timeout=30,
    )
    return proc.returncode, jobdir, proc.stderr.decode()


def test_hostile_environment_values_arrive_verbatim_and_run_nothing(tmp_path: Path) -> None:
    names = list(HOSTILE)
    script = "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    job = JobRequest(gateway_id=GID, name="env", script=script, environment=HOSTILE)
    code, jobdir = run_job(tmp_path, job)
    assert code == 0
    values = Path(jobdir.file("stdout")).read_bytes().split(b"\0")[:-1]
    assert dict(zip(names, (v.decode() for v in values), strict=True)) == HOSTILE
    assert not list(tmp_path.rglob("pwned-*"))


def test_hostile_arguments_reach_the_command_verbatim(tmp_path: Path) -> None:
    args = ["; rm -rf ~", "$(id)", "`id`", 'it\'s "q"', "line one\nline two", "", "*"]
    job = JobRequest(gateway_id=GID, name="args", command="printf", arguments=["%s|", *args])
    code, jobdir = run_job(tmp_path, job)
    assert code == 0
    assert Path(jobdir.file("stdout")).read_text() == "".join(f"{a}|" for a in args)


def test_working_dir_with_quotes_and_spaces(tmp_path: Path) -> None:
    workdir = tmp_path / "dir with spaces" / "it's"
    workdir.mkdir(parents=True)
    job = JobRequest(gateway_id=GID, name="wd", script="pwd", working_dir=str(workdir))
    code, jobdir = run_job(tmp_path, job)
    assert (code, Path(jobdir.file("stdout")).read_text()) == (0, f"{workdir}\n")


def test_default_working_dir_is_the_job_dir_and_tilde_is_home(tmp_path: Path) -> None:
    _, jobdir = run_job(tmp_path, JobRequest(gateway_id=GID, name="wd", script="pwd"))
    assert Path(jobdir.file("stdout")).read_text() == f"{jobdir.path}\n"
    (tmp_path / "home" / "proj").mkdir(parents=True)
    other = "11111111-1111-4111-8111-111111111111"
    job = JobRequest(gateway_id=other, name="wd", script="pwd", working_dir="~/proj")
    _, jobdir = run_job(tmp_path, job)
    assert Path(jobdir.file("stdout")).read_text() == f"{tmp_path}/home/proj\n"


def test_exit_status_is_recorded_atomically_and_returned(tmp_path: Path) -> None:
    job = JobRequest(gateway_id=GID, name="fail", script="echo before\nexit 7\necho after")
    code, jobdir = run_job(tmp_path, job)
    assert code == 7
    assert Path(jobdir.file("exit_code")).read_text() == "7\n"
    assert not Path(jobdir.file("exit_code.tmp")).exists()
    assert Path(jobdir.file("stdout")).read_text() == "before\n"


def test_missing_working_dir_fails_the_job_with_a_message(tmp_path: Path) -> None:
    job = JobRequest(gateway_id=GID, name="wd", script="true", working_dir=str(tmp_path / "no"))
    code, jobdir = run_job(tmp_path, job)
    assert code == 1 and Path(jobdir.file("exit_code")).read_text() == "1\n"
    assert "No such file or directory" in Path(jobdir.file("stderr")).read_text()


def test_user_script_gets_a_shebang_only_when_it_has_none() -> None:
    plain = JobRequest(gateway_id=GID, name="s", script="echo hi")
    assert render_user_script(plain) == "#!/bin/bash\necho hi\n"
    own = JobRequest(gateway_id=GID, name="s", script="#!/bin/sh\necho hi\n")
    assert render_user_script(own) == "#!/bin/sh\necho hi\n"


@pytest.mark.parametrize(
    "path,resolved",
    [
        ("~", "/home/alice"),
        ("~/.hpcfed", "/home/alice/.hpcfed"),
        ("work/x", "/home/alice/work/x"),
        ("/scratch/alice/", "/scratch/alice"),
        ("~/a/../b", "/home/alice/b"),
    ],
)
def test_paths_resolve_against_home(path: str, resolved: str) -> None:
    assert resolve_path(path, "/home/alice") == resolved


def test_other_users_home_is_not_guessed() -> None:
    with pytest.raises(ValueError, match="~user"):
        resolve_path("~bob/x", "/home/alice")


def test_job_dir_refuses_a_gateway_id_that_is_not_a_uuid() -> None:
    with pytest.raises(ValueError):
        JobDir("/home/alice/.hpcfed", "../../etc")


ARRAY_JOB = JobRequest(
    gateway_id=GID,
    name="arr",
    script='echo "element $HPCFED_ARRAY_INDEX of $HPCFED_JOB_ID"\nexit "$HPCFED_ARRAY_INDEX"\n',
    array="0-7",
    environment={"HPCFED_ARRAY_INDEX": "not-this"},
)


@pytest.mark.parametrize(
    "env,own_id",
    [
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_JOB_ID": "57"}, "57"),
        ({"PBS_ARRAYID": "3", "PBS_JOBID": "42[3].head"}, "42[3].head"),  # Torque
        ({"PBS_ARRAY_INDEX": "3", "PBS_JOBID": "42[3].pbs01"}, "42[3].pbs01"),  # PBS Pro
    ],
)
def test_an_array_element_writes_its_own_files_from_its_schedulers_index(
    tmp_path: Path, env: dict[str, str], own_id: str
) -> None:
    code, jobdir, _ = run_element(tmp_path, ARRAY_JOB, env)
    assert code == 3
    assert Path(jobdir.file("stdout.3")).read_text() == f"element 3 of {GID}\n"
    assert Path(jobdir.file("exit_code.3")).read_text() == "3\n"
    assert Path(jobdir.file("started.3")).read_text() == f"{own_id}\n"
    assert not Path(jobdir.file("stdout")).exists() and not Path(jobdir.file("exit_code")).exists()
    assert not list(Path(jobdir.path).glob("*.tmp"))


def test_an_array_element_without_an_index_fails_saying_so(tmp_path: Path) -> None:
    code, jobdir, stderr = run_element(tmp_path, ARRAY_JOB, {"SLURM_ARRAY_TASK_ID": "x;id"})
    assert code == 1 and "no array index from the scheduler" in stderr
    assert not list(Path(jobdir.path).glob("exit_code*"))


def marker_lines(jobdir: JobDir, *names: str) -> str:
    """The marker read's lines for these files of the job dir."""
    return "".join(f"{GID}/{n}:{Path(jobdir.file(n)).read_text()}" for n in names)


def start_and_signal(tmp_path: Path, job: JobRequest) -> tuple[JobDir, str]:
    """Run job.sh until the user script is running, then SIGTERM every process of the
    job as a scheduler does; returns the `times` marker as it was while the job ran."""
    jobdir = lay_out(tmp_path, job)
    with open(jobdir.file("stdout"), "wb") as out:
        proc = subprocess.Popen(
            ["bash", jobdir.file("job.sh")], stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + 20
    while not Path(jobdir.file("started-here")).exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the job did not start"
        time.sleep(0.05)
    while_running = Path(jobdir.file("times")).read_text()
    os.killpg(proc.pid, signal.SIGTERM)  # as a scheduler signals every process of the job
    assert proc.wait(timeout=20) == 143
    return jobdir, while_running


def test_sigterm_from_the_scheduler_leaves_a_terminated_marker(tmp_path: Path) -> None:
    script = "touch started-here\nsleep 30\n"
    job = JobRequest(gateway_id=GID, name="t", script=script, walltime_seconds=60)
    jobdir, _ = start_and_signal(tmp_path, job)
    elapsed, limit = Path(jobdir.file("terminated")).read_text().split()
    assert (int(elapsed) < 10, limit) == (True, "60")
    assert Path(jobdir.file("exit_code")).read_text() == "143\n"
    markers = parse_markers(marker_lines(jobdir, "exit_code", "terminated"))
    # Terminated within seconds of a 60 s walltime: not the walltime.
    assert status_from_markers("42", markers[GID]).state is JobState.FAILED


def test_sigterm_before_the_user_script_starts_keeps_it_from_starting(tmp_path: Path) -> None:
    # A cancel right after the start signals job.sh while it writes its first markers:
    # bash runs the trap at once and would go on to run the user script to its end.
    # The first `times` write goes to a FIFO with no reader: job.sh (its trap set)
    # waits there in open() until the signal has arrived.
    job = JobRequest(gateway_id=GID, name="t", script="touch started-here\nsleep 30\n")
    jobdir = lay_out(tmp_path, job)
    fifo = jobdir.file("times.tmp")
    os.mkfifo(fifo)
    with open(jobdir.file("stdout"), "wb") as out:
        proc = subprocess.Popen(
            ["bash", jobdir.file("job.sh")], stdout=out, stderr=out, start_new_session=True
        )
    reader = None
    try:
        deadline = time.monotonic() + 20
        while Path(f"/proc/{proc.pid}/wchan").read_text() != "wait_for_partner":
            assert time.monotonic() < deadline and proc.poll() is None, "job.sh did not wait"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        reader = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # job.sh goes on
        assert proc.wait(timeout=20) == 143
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if reader is not None:
            os.close(reader)
    assert not Path(jobdir.file("started-here")).exists()
    assert Path(jobdir.file("exit_code")).read_text() == "143\n"
    elapsed, limit = Path(jobdir.file("terminated")).read_text().split()
    assert (int(elapsed) < 10, limit) == (True, "-")


def test_the_job_records_when_it_started_and_when_its_script_returned(tmp_path: Path) -> None:
    job = JobRequest(gateway_id=GID, name="t", script="sleep 1\nexit 3\n")
    before = time.time()
    code, jobdir = run_job(tmp_path, job)
    after = time.time()
    assert code == 3
    words = Path(jobdir.file("times")).read_text().split()
    assert len(words) == 2 and not Path(jobdir.file("times.tmp")).exists()
    started, ended = parse_times(" ".join(words))
    assert started is not None and ended is not None
    assert before <= started and ended <= after  # bash 5: EPOCHREALTIME, this clock's
    assert 1.0 <= ended - started < after - before
    markers = parse_markers(marker_lines(jobdir, "exit_code", "times"))[GID]
    status = status_from_markers("42", markers)
    assert (status.state, status.started_at, status.ended_at) == (
        JobState.FAILED,
        started,
        ended,
    )


def test_without_epochrealtime_the_times_are_whole_seconds_from_date(tmp_path: Path) -> None:
    # bash 4 has no EPOCHREALTIME; unsetting it in bash 5 makes it an ordinary variable.
    jobdir = lay_out(tmp_path, JobRequest(gateway_id=GID, name="t", script="true"))
    before = int(time.time())
    proc = subprocess.run(
        ["bash", "-c", 'unset EPOCHREALTIME; . "$0"', jobdir.file("job.sh")],
        cwd=tmp_path,
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    words = Path(jobdir.file("times")).read_text().split()
    assert [w.isdigit() for w in words] == [True, True]
    assert before <= int(words[0]) <= int(words[1]) <= time.time()


def test_a_job_killed_at_its_walltime_has_an_end(tmp_path: Path) -> None:
    script = "touch started-here\nsleep 30\n"
    job = JobRequest(gateway_id=GID, name="t", script=script, walltime_seconds=2)
    jobdir, while_running = start_and_signal(tmp_path, job)
    running_start, running_end = parse_times(while_running)
    assert running_start is not None and running_end is None  # the start alone, while it ran
    markers = parse_markers(marker_lines(jobdir, "exit_code", "terminated", "times"))[GID]
    status = status_from_markers("42", markers)
    assert status.state is JobState.TIMEOUT
    assert status.started_at == running_start
    assert status.ended_at is not None and 0 <= status.ended_at - status.started_at < 20
    # The trap writes the end first: a SIGKILL soon after the SIGTERM cannot lose it.
    body = Path(jobdir.file("job.sh")).read_text()
    assert "hpcfed_terminated() { hpcfed_ended; " in body
    assert body.index("\nhpcfed_ended\n") < body.index("exit_code.tmp && mv")


def test_each_array_element_records_its_own_times(tmp_path: Path) -> None:
    slow = JobRequest(
        gateway_id=GID,
        name="arr",
        script='[ "$HPCFED_ARRAY_INDEX" = 5 ] && sleep 1\nexit 0\n',
        array="3,5",
    )
    for index in ("3", "5"):
        code, jobdir, _ = run_element(tmp_path, slow, {"SLURM_ARRAY_TASK_ID": index})
        assert code == 0
    assert not Path(jobdir.file("times")).exists()
    text = "".join(
        marker_lines(jobdir, f"started.{i}", f"exit_code.{i}", f"times.{i}") for i in (3, 5)
    )
    markers = parse_markers(text + f"{GID}/array:3,5\n")[GID]
    three, five = markers.elements[3], markers.elements[5]
    assert None not in (three.started_at, three.ended_at, five.started_at, five.ended_at)
    assert three.ended_at <= five.started_at  # type: ignore[operator] # ran one after the other
    assert five.ended_at - five.started_at >= 1.0  # type: ignore[operator]
    status = settle_array("7", None, markers, lambda i, s: f"7_{i}", lists_pending=True)
    assert [(e.index, e.started_at, e.ended_at) for e in status.elements] == [
        (3, three.started_at, three.ended_at),
        (5, five.started_at, five.ended_at),
    ]
    assert (status.started_at, status.ended_at) == (three.started_at, five.ended_at)


def test_every_marker_file_is_read_in_one_command_elements_included(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path / "root"), GID)
    other = JobDir(str(tmp_path / "root"), "11111111-1111-4111-8111-111111111111")
    files = {
        jobdir: {
            "native_id": "42\n",
            "array": "0-3%2\n",
            "exit_code.0": "0\n",
            "exit_code.1.tmp": "9\n",  # half-written: not read as an exit status
            "started.1": "43\n",
            "terminated.1": "3600 3600\n",
            "times.1": "1796141163 1796144763\n",
            "times.1.tmp": "1796141163 9\n",  # half-written
            "stdout.0": "not a marker\n",
            "cancelled": "cancelled\n",
        },
        other: {"exit_code": "7\n", "native_id": "44\n", "times": "1796144763.5 1796144765\n"},
    }
    for d, names in files.items():
        Path(d.path).mkdir(parents=True)
        for name, text in names.items():
            Path(d.file(name)).write_text(text)
    (Path(jobdir.path) / "sub").mkdir()
    (Path(jobdir.path) / "sub" / "exit_code").write_text("5\n")  # the user's, not ours
    gone = "22222222-2222-4222-8222-222222222222"
    command, stdin = all_markers_command(str(tmp_path / "root"), [GID, other.gateway_id, gone])
    out = subprocess.run(["sh", "-c", command], input=stdin, capture_output=True, timeout=30)
    markers = parse_markers(out.stdout.decode())
    assert markers == {
        GID: JobMarkers(
            native_id="42",
            cancelled=True,
            array="0-3%2",
            elements={
                0: ElementMarkers(exit_code=0),
                1: ElementMarkers(
                    started="43",
                    terminated=Termination(3600, 3600),
                    started_at=1796141163.0,
                    ended_at=1796144763.0,
                ),
            },
        ),
        other.gateway_id: JobMarkers(
            "44", 7, False, started_at=1796144763.5, ended_at=1796144765.0
        ),
    }
    assert markers[GID].indices() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "arg,reserved",
    [
        ("--output=/tmp/x", True),
        ("--output /tmp/x", True),
        ("-o /tmp/x", True),
        ("-o/tmp/x", True),
        ("--comment=x", True),
        ("--exclusive", False),
        ("--open-mode=append", True),
        ("--constraint=haswell", False),
        ("-W depend=afterok:1", True),
        ("-Wdepend=afterok:1", True),
        ("-W x=QOS:high", False),
        ("-t 1-3", True),
        ("-l place=scatter", False),
    ],
)
def test_directives_that_would_override_the_gateways_are_recognised(
    arg: str, reserved: bool
) -> None:
    options = ("-o", "--output", "--comment", "--open-mode", "-W depend", "-t")
    assert reserved_directive(arg, options) is reserved


def test_malformed_dependencies_and_directives_are_refused_naming_the_field() -> None:
    def job(**fields: object) -> JobRequest:
        return JobRequest(gateway_id=GID, name="d", command="true", **fields)  # type: ignore[arg-type]

    cases = [
        (job(dependencies=[("afterok", "12"), ("before", "13")]), "dependencies[1].condition"),
        (job(dependencies=[("afterok", "12; rm -rf ~")]), "dependencies[0].job"),
        (job(extra_directives=["--exclusive", "--comment=$(id)"]), "extra_directives.slurm[1]"),
        (job(extra_directives=["--x\n#SBATCH --uid=0"]), "extra_directives.slurm[0]"),
    ]
    for request, field in cases:
        with pytest.raises(SpecRefused) as refused:
            check_request(request, SLURM_ID_RE, "slurm")
        assert refused.value.field == field
    check_request(job(dependencies=[("afterany", "12_3")]), SLURM_ID_RE, "slurm")


def test_dependencies_are_grouped_by_condition_in_order() -> None:
    pairs = [("afterok", "1"), ("afterany", "3"), ("afterok", "2")]
    assert grouped_dependencies(pairs) == "afterok:1:2,afterany:3"
    assert grouped_dependencies(()) is None


def test_markers_command_sends_the_file_list_on_stdin() -> None:
    command, stdin = markers_command("/home/a b/.hpcfed", [GID], ("native_id", "exit_code"))
    assert command == "cd '/home/a b/.hpcfed/jobs' && xargs grep -s -H '' --"
    assert stdin == f"{GID}/native_id\n{GID}/exit_code\n".encode()


def test_recorded_marker_output_parses_per_job() -> None:
    markers = parse_markers((FIXTURES / "jobdir" / "markers.txt").read_text())
    assert markers == {
        "2b7bce65-1db8-4784-bf4f-4bda412e955b": JobMarkers(
            "1755", 0, True, started_at=1796146595.509070, ended_at=1796146595.525094
        ),
        "fa12ce99-ea54-4295-ab46-2d78ba3111db": JobMarkers(
            "1756", 7, False, started_at=1796146595.495619, ended_at=1796146595.504129
        ),
        "147270c8-e370-4bfd-9019-9ed8f85e9bbc": JobMarkers("1757", None, True),  # never ran
        "8ab87c1c-8644-4928-9c56-6de0b476011d": JobMarkers("1758", started_at=1796146595.520892),
        "ef1a97d5-e8ad-4937-8f2c-8fbe5d208ea3": JobMarkers("1759"),  # held
    }


def test_marker_lines_that_are_not_ours_are_ignored() -> None:
    text = f"junk\n../x/exit_code:1\n{GID}/other:3\n{GID}/exit_code:x\n{GID}/native_id:5;clu\n"
    assert parse_markers(text) == {GID: JobMarkers("5", None, False)}


@pytest.mark.parametrize(
    "markers,state,code",
    [
        (JobMarkers("42", 0, False), JobState.COMPLETED, 0),
        (JobMarkers("42", 3, False), JobState.FAILED, 3),
        (JobMarkers("42", 0, True), JobState.COMPLETED, 0),  # finished before the cancel
        (JobMarkers("42", 143, True), JobState.CANCELLED, 143),
        (JobMarkers("42", None, True), JobState.CANCELLED, None),
        (JobMarkers("42", 143, False, Termination(75, 60)), JobState.TIMEOUT, 143),
        (JobMarkers("42", 143, False, Termination(58, 60)), JobState.TIMEOUT, 143),  # slack
        (JobMarkers("42", 143, False, Termination(20, 600)), JobState.FAILED, 143),  # preempted
        (JobMarkers("42", 143, False, Termination(20, None)), JobState.TIMEOUT, 143),  # no limit
        (JobMarkers("42", None, False, Termination(70, 60)), JobState.TIMEOUT, None),  # SIGKILLed
        (JobMarkers("42", 143, True, Termination(5, 60)), JobState.CANCELLED, 143),
        (JobMarkers("42", 3, True), JobState.FAILED, 3),  # ended on its own before the cancel
        (JobMarkers("42", 1, True, Termination(5, 60)), JobState.CANCELLED, 1),  # trapped TERM
    ],
)
def test_final_state_from_the_job_dir(markers: JobMarkers | None, state: JobState, code) -> None:
    status = status_from_markers("42", markers)
    assert (status.state, status.exit_code, status.native_state) == (state, code, LEFT_QUEUE)


@pytest.mark.parametrize(
    "markers",
    [
        JobMarkers("42", None, False),
        None,
        JobMarkers("41", 0, False),  # the files of another submission tell nothing of this one
    ],
)
def test_a_job_gone_from_the_listing_without_an_end_in_its_files_is_not_ended(
    markers: JobMarkers | None,
) -> None:
    status = status_from_markers("42", markers)
    assert (status.state, status.native_state, status.exit_code) == (
        JobState.UNKNOWN,
        NOT_LISTED,
        None,
    )
    assert status.unlisted and not status.state.is_terminal
    assert "records no end" in (status.reason or "")


def test_an_end_the_scheduler_reports_without_exit_status_or_files_is_a_failure() -> None:
    # Torque's `C` says it ended; nothing says how: killed before job.sh wrote its status.
    status = settle("42", NativeStatus("42", JobState.COMPLETED, "C"), None)
    assert (status.state, status.native_state, status.exit_code) == (JobState.FAILED, "C", None)
    assert "without an exit status" in (status.reason or "")


def test_a_walltime_kill_says_the_scheduler_terminated_it() -> None:
    timeout = status_from_markers("42", JobMarkers("42", 143, False, Termination(62, 60)))
    assert timeout.reason == "terminated by the scheduler after 62 s: walltime of 60 s exceeded"
    early = status_from_markers("42", JobMarkers("42", 143, False, Termination(20, 600)))
    assert "before its walltime of 600 s" in (early.reason or "")


def test_termination_marker_is_read_leniently() -> None:
    assert Termination.parse("62 60") == Termination(62, 60)
    assert Termination.parse("62 -") == Termination(62, None)
    assert Termination.parse("") == Termination(None, None)


def ns(
    state: JobState,
    native: str = "X",
    code: int | None = None,
    times: tuple[float | None, float | None] = (None, None),
) -> NativeStatus:
    return NativeStatus("42", state, native, None, code, started_at=times[0], ended_at=times[1])


RAN = (1000.0, 1060.0)  # the scheduler's start and end of a job


@pytest.mark.parametrize(
    "status,needed",
    [
        (None, True),
        (ns(JobState.RUNNING), False),  # not every poll of a running job reads its files
        (ns(JobState.RUNNING, times=(RAN[0], None)), False),
        (ns(JobState.QUEUED), False),
        (ns(JobState.COMPLETED, code=0, times=RAN), False),
        (ns(JobState.COMPLETED, code=0), True),  # ended, but the scheduler did not say when
        (ns(JobState.COMPLETED, times=RAN), True),
        (ns(JobState.FAILED, code=3, times=RAN), False),
        (ns(JobState.FAILED, code=143, times=RAN), True),
        (ns(JobState.FAILED, times=RAN), True),
        (ns(JobState.CANCELLED, times=RAN), False),
        (ns(JobState.CANCELLED, times=(None, RAN[1])), False),  # cancelled before it started
        (ns(JobState.CANCELLED), True),
        (ns(JobState.TIMEOUT, times=RAN), False),
        (ns(JobState.TIMEOUT), True),
        (ns(JobState.UNKNOWN), True),
    ],
)
def test_which_statuses_the_job_dir_must_complete(status, needed: bool) -> None:
    assert needs_job_dir(status) is needed


@pytest.mark.parametrize(
    "text,times",
    [
        ("1796144763", (1796144763.0, None)),  # running: the start alone
        ("1796144763 1796144765", (1796144763.0, 1796144765.0)),  # `date +%s`
        ("1796144763.146183 1796144765.5", (1796144763.146183, 1796144765.5)),  # EPOCHREALTIME
        ("1796144763,25 1796144765,5", (1796144763.25, 1796144765.5)),  # a comma locale's
        ("1796144765 1796144763", (1796144765.0, None)),  # the clock went back: no end
        ("soon later", (None, None)),
        ("", (None, None)),
    ],
)
def test_times_marker_is_read_leniently(text: str, times: tuple) -> None:
    assert parse_times(text) == times


def test_times_markers_are_parsed_per_job_and_per_element() -> None:
    text = (
        f"{GID}/native_id:42\n{GID}/exit_code:0\n{GID}/times:1796144763.5 1796144765.25\n"
        f"{GID}/array:0-1\n{GID}/times.0:1796144770 1796144771\n{GID}/times.1:1796144772\n"
    )
    markers = parse_markers(text)[GID]
    assert (markers.started_at, markers.ended_at) == (1796144763.5, 1796144765.25)
    assert markers.elements == {
        0: ElementMarkers(started_at=1796144770.0, ended_at=1796144771.0),
        1: ElementMarkers(started_at=1796144772.0),
    }
    assert markers.element(1).started_at == 1796144772.0


def test_a_scheduler_status_without_times_gets_them_from_the_job_dir() -> None:
    done = JobMarkers("42", 0, False, started_at=1001.5, ended_at=1059.5)
    # Torque's C, and a COMPLETED whose end the scheduler did not print: the files tell.
    for seen in (ns(JobState.COMPLETED, "C"), ns(JobState.COMPLETED, "COMPLETED", 0)):
        settled = settle("42", seen, done)
        assert (settled.state, settled.started_at, settled.ended_at) == (
            JobState.COMPLETED,
            1001.5,
            1059.5,
        )
    # Both tell: the job's own record first. Only the scheduler tells: its times stand.
    assert settle("42", ns(JobState.COMPLETED, code=0, times=RAN), done).started_at == 1001.5
    no_times = JobMarkers("42", 0, False)
    assert settle("42", ns(JobState.COMPLETED, code=0, times=RAN), no_times).ended_at == RAN[1]
    # A running job: its start, never an end (a scheduler's end of it is a forecast).
    running = settle("42", ns(JobState.RUNNING, "R", times=RAN), JobMarkers("42"))
    assert (running.state, running.started_at, running.ended_at) == (
        JobState.RUNNING,
        RAN[0],
        None,
    )
    # Files of another submission say nothing of this one's times.
    other = JobMarkers("41", 0, False, started_at=1.0, ended_at=2.0)
    assert settle("42", ns(JobState.COMPLETED, code=0, times=RAN), other).started_at == RAN[0]


def test_a_job_cancelled_before_it_started_has_an_end_but_no_start() -> None:
    # Slurm (and its Torque wrapper) stamps such a job with the cancel as start and end.
    stamped = ns(JobState.COMPLETED, "C", times=(1030.0, 1030.0))
    settled = settle("42", stamped, JobMarkers("42", None, True))
    assert (settled.state, settled.started_at, settled.ended_at) == (
        JobState.CANCELLED,
        None,
        1030.0,
    )
    ran = JobMarkers("42", 143, True, Termination(5, 60), started_at=1025.0, ended_at=1030.0)
    settled = settle("42", ns(JobState.COMPLETED, "C", times=(1025.0, 1030.0)), ran)
    assert (settled.state, settled.started_at, settled.ended_at) == (
        JobState.CANCELLED,
        1025.0,
        1030.0,
    )


def test_settling_combines_scheduler_and_job_dir() -> None:
    done, killed, cancel = JobMarkers("42", 5, False), JobMarkers("42", 143, True), None
    # Torque's C says only "finished": the directory says how.
    assert settle("42", ns(JobState.COMPLETED, "C"), done) == NativeStatus(
        "42", JobState.FAILED, "C", "exit status from the job directory", 5
    )
    assert settle("42", ns(JobState.COMPLETED, "C"), cancel).state is JobState.FAILED
    # A signal-killed job we cancelled is CANCELLED.
    assert settle("42", ns(JobState.FAILED, "F", 143), killed).state is JobState.CANCELLED
    # PBS reports a walltime kill as a signal (exit status 271): the marker says why.
    at_walltime = JobMarkers("42", 143, False, Termination(3601, 3600))
    assert settle("42", ns(JobState.FAILED, "C", 143), at_walltime).state is JobState.TIMEOUT
    # The scheduler's own verdict stands, completed with the exit code.
    assert settle("42", ns(JobState.TIMEOUT, "TIMEOUT"), done) == ns(JobState.TIMEOUT, "TIMEOUT", 5)
    # Still running when the scheduler was asked, ended when the directory was read.
    assert settle("42", ns(JobState.RUNNING, "R"), done).state is JobState.FAILED
    assert settle("42", ns(JobState.UNKNOWN, "U"), None).state is JobState.UNKNOWN
    assert settle("42", ns(JobState.UNKNOWN, "U"), done).state is JobState.FAILED
    assert settle("42", None, done).native_state == LEFT_QUEUE


def test_rendered_body_quotes_every_value_once() -> None:
    job = JobRequest(gateway_id=GID, name="q", script="true", environment={"A": "x y"})
    body = render_body(job, JobDir("/r", GID), "/home/alice")
    assert "export A='x y'\n" in body
    assert "\"'" not in body.split("\n")[0]  # no "..." wrapped around a quoted value
    assert os.linesep == "\n"
