"""The job directory: rendering the job body (run for real by bash), marker files, settling."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from adapters.base import JobRequest, JobState, NativeStatus
from adapters.jobdir import (
    LEFT_QUEUE,
    JobDir,
    JobMarkers,
    markers_command,
    needs_job_dir,
    parse_markers,
    render_body,
    render_user_script,
    resolve_path,
    settle,
    status_from_markers,
)

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


def run_job(tmp_path: Path, job: JobRequest) -> tuple[int, JobDir]:
    """Lay out the job dir as the adapter does and run job.sh with bash, no scheduler."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    jobdir = JobDir(str(tmp_path / "root"), job.gateway_id)
    Path(jobdir.path).mkdir(parents=True)
    Path(jobdir.file("job.sh")).write_text("#!/bin/bash\n" + render_body(job, jobdir, str(home)))
    script = Path(jobdir.file("script"))
    script.write_text(render_user_script(job))
    script.chmod(0o700)
    with open(jobdir.file("stdout"), "wb") as out, open(jobdir.file("stderr"), "wb") as err:
        proc = subprocess.run(
            ["bash", jobdir.file("job.sh")], cwd=tmp_path, stdout=out, stderr=err, timeout=30
        )
    return proc.returncode, jobdir


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


def test_markers_command_sends_the_file_list_on_stdin() -> None:
    command, stdin = markers_command("/home/a b/.hpcfed", [GID], ("native_id", "exit_code"))
    assert command == "cd '/home/a b/.hpcfed/jobs' && xargs grep -s -H '' --"
    assert stdin == f"{GID}/native_id\n{GID}/exit_code\n".encode()


def test_recorded_marker_output_parses_per_job() -> None:
    markers = parse_markers((FIXTURES / "jobdir" / "markers.txt").read_text())
    assert markers == {
        "e97dc3b2-f892-4298-a577-babdffe073ca": JobMarkers("10", 0, True),
        "2490d85f-a475-4d40-aaaf-f1b4c977af36": JobMarkers("11", 7, False),
        "ca05de7a-0e52-4d49-8ddb-e447b4ba3cd4": JobMarkers("12", None, True),
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
        (JobMarkers("42", None, False), JobState.FAILED, None),
        (None, JobState.FAILED, None),
        (JobMarkers("41", 0, False), JobState.FAILED, None),  # files of another submission
    ],
)
def test_final_state_from_the_job_dir(markers: JobMarkers | None, state: JobState, code) -> None:
    status = status_from_markers("42", markers)
    assert (status.state, status.exit_code, status.native_state) == (state, code, LEFT_QUEUE)


def test_job_gone_without_exit_status_says_so() -> None:
    assert "left the queue without an exit status" in status_from_markers("42", None).reason


def ns(state: JobState, native: str = "X", code: int | None = None) -> NativeStatus:
    return NativeStatus("42", state, native, None, code)


@pytest.mark.parametrize(
    "status,needed",
    [
        (None, True),
        (ns(JobState.RUNNING), False),
        (ns(JobState.QUEUED), False),
        (ns(JobState.COMPLETED, code=0), False),
        (ns(JobState.COMPLETED), True),
        (ns(JobState.FAILED, code=3), False),
        (ns(JobState.FAILED, code=143), True),
        (ns(JobState.FAILED), True),
        (ns(JobState.CANCELLED), False),
        (ns(JobState.TIMEOUT), False),
        (ns(JobState.UNKNOWN), True),
    ],
)
def test_which_statuses_the_job_dir_must_complete(status, needed: bool) -> None:
    assert needs_job_dir(status) is needed


def test_settling_combines_scheduler_and_job_dir() -> None:
    done, killed, cancel = JobMarkers("42", 5, False), JobMarkers("42", 143, True), None
    # Torque's C says only "finished": the directory says how.
    assert settle("42", ns(JobState.COMPLETED, "C"), done) == NativeStatus(
        "42", JobState.FAILED, "C", "exit status from the job directory", 5
    )
    assert settle("42", ns(JobState.COMPLETED, "C"), cancel).state is JobState.FAILED
    # A signal-killed job we cancelled is CANCELLED.
    assert settle("42", ns(JobState.FAILED, "F", 143), killed).state is JobState.CANCELLED
    # The scheduler's own verdict stands, completed with the exit code.
    assert settle("42", ns(JobState.TIMEOUT, "TIMEOUT"), done) == ns(JobState.TIMEOUT, "TIMEOUT", 5)
    assert settle("42", ns(JobState.UNKNOWN, "U"), None).state is JobState.UNKNOWN
    assert settle("42", ns(JobState.UNKNOWN, "U"), done).state is JobState.FAILED
    assert settle("42", None, done).native_state == LEFT_QUEUE


def test_rendered_body_quotes_every_value_once() -> None:
    job = JobRequest(gateway_id=GID, name="q", script="true", environment={"A": "x y"})
    body = render_body(job, JobDir("/r", GID), "/home/alice")
    assert "export A='x y'\n" in body
    assert "\"'" not in body.split("\n")[0]  # no "..." wrapped around a quoted value
    assert os.linesep == "\n"
