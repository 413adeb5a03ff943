"""One remote command lays out and submits many job dirs, reading the job files as a
tar on stdin and answering each job's outcome as a tar on stdout. Run here with `sh`
and a stand-in scheduler."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from adapters.batch.jobdir import (
    JobDir,
    batch_submit_command,
    batch_submit_input,
    job_files,
    parse_batch_output,
)

GIDS = [f"0b4a4e8e-6b5e-4c36-9a57-1f7c1a1c2b3{i}" for i in range(3)]
# Text that a here-document or the shell could misread, were it not sent as a file.
TRICKY = "#!/bin/sh\necho 'EOF' \"$HOME\" `id`\nEOF\n\\\né\n"


def submit(
    root: Path, tools: list[str] | str, texts: list[str] | None = None
) -> dict[str, tuple[int, bytes, bytes]]:
    """Submit len(tools) jobs (job i with tools[i] as its scheduler) in one command."""
    tools = [tools] if isinstance(tools, str) else tools
    jobdirs = [JobDir(str(root), g) for g in GIDS[: len(tools)]]
    answers: dict[str, tuple[int, bytes, bytes]] = {}
    for tool in set(tools):  # the scheduler tool is one per command
        mine = [d for d, t in zip(jobdirs, tools, strict=True) if t == tool]
        files = [(d, job_files((texts or ["true\n"])[0], "echo user\n")) for d in mine]
        done = subprocess.run(
            ["sh", "-c", batch_submit_command(str(root), mine, tool)],
            input=batch_submit_input(files),
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        answers |= parse_batch_output(done.stdout)
    return answers


def test_every_file_is_written_byte_for_byte_with_its_mode(tmp_path: Path) -> None:
    root = tmp_path / "root"
    jobdir = JobDir(str(root), GIDS[0])
    files = job_files(TRICKY, "echo user\n", {"array": "0-3\n"})
    done = subprocess.run(
        ["sh", "-c", batch_submit_command(str(root), [jobdir], "sh -c 'echo 41' --")],
        input=batch_submit_input([(jobdir, files)]),
        capture_output=True,
    )
    assert parse_batch_output(done.stdout) == {GIDS[0]: (0, b"41\n", b"")}
    assert Path(jobdir.file("job.sh")).read_bytes() == TRICKY.encode()
    modes = {f: stat.S_IMODE(os.stat(jobdir.file(f)).st_mode) for f in ("job.sh", "array")}
    assert modes == {"job.sh": 0o700, "array": 0o600}
    assert stat.S_IMODE(os.stat(jobdir.path).st_mode) == 0o700
    assert Path(jobdir.file("native_id")).read_text() == "41\n"
    assert [p.name for p in root.iterdir()] == ["jobs"]  # its scratch dir is gone


def test_each_job_has_its_own_status_stdout_and_stderr(tmp_path: Path) -> None:
    tools = [
        "sh -c 'echo 7; echo note >&2' --",
        "sh -c 'echo refused; echo why >&2; exit 1' --",
        "sh -c 'printf 9' --",  # no newline at the end
    ]
    assert submit(tmp_path, tools) == {
        GIDS[0]: (0, b"7\n", b"note\n"),
        GIDS[1]: (1, b"refused\n", b"why\n"),
        GIDS[2]: (0, b"9", b""),
    }
    assert not Path(JobDir(str(tmp_path), GIDS[1]).file("native_id")).exists()


def test_a_second_command_for_a_submitted_job_prints_its_id_and_writes_nothing(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "calls"
    tool = f"sh -c 'echo x >> {calls}; echo 42' --"
    first = submit(tmp_path, tool, ["a\n"])
    again = submit(tmp_path, tool, ["b\n"])
    assert first == again == {GIDS[0]: (0, b"42\n", b"")}
    assert calls.read_text() == "x\n"
    assert Path(JobDir(str(tmp_path), GIDS[0]).file("job.sh")).read_text() == "a\n"


def test_leftovers_of_an_attempt_that_never_ran_are_cleared(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path), GIDS[0])
    Path(jobdir.path).mkdir(parents=True)
    for name in ("exit_code", "stdout", "times"):
        Path(jobdir.file(name)).write_text("old\n")
    submit(tmp_path, "echo 5")
    assert not any(Path(jobdir.file(n)).exists() for n in ("exit_code", "stdout", "times"))


def test_a_job_dir_that_cannot_be_made_fails_that_job_only(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / GIDS[0]).write_text("a file where the job dir goes\n")
    answers = submit(tmp_path, ["sh -c 'echo 5' --"] * 2)
    assert answers[GIDS[0]][0] == 73
    assert answers[GIDS[1]] == (0, b"5\n", b"")


@pytest.mark.parametrize("cut", [0, 100, 700])
def test_a_cut_answer_leaves_every_job_unknown(tmp_path: Path, cut: int) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((f"out/{GIDS[0]}.rc", b"0\n"), (f"out/{GIDS[0]}.o", b"42\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    whole = buf.getvalue()
    assert parse_batch_output(whole) == {GIDS[0]: (0, b"42\n", b"")}
    assert parse_batch_output(whole[:cut]) == {}


def test_entries_that_are_not_a_jobs_answer_are_ignored() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (
            ("out/../../etc.rc", b"0"),
            ("out/x.rc", b"0"),
            (f"out/{GIDS[1]}.rc", b"?"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert parse_batch_output(buf.getvalue()) == {}
