"""The submission command never reaches the scheduler twice for one job dir, even when
an earlier attempt (orphaned by a gateway that died) is still running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from adapters.batch.jobdir import (
    JobDir,
    batch_submit_command,
    batch_submit_input,
    job_files,
    parse_batch_output,
)

GID = "0b4a4e8e-6b5e-4c36-9a57-1f7c1a1c2b3d"


def argv_and_input(root: Path, tool: str) -> tuple[list[str], bytes]:
    jobdir = JobDir(str(root), GID)
    command = batch_submit_command(str(root), [jobdir], tool)
    return ["sh", "-c", command], batch_submit_input([(jobdir, job_files("true\n", "true\n"))])


def test_an_attempt_after_a_lost_reply_prints_the_id_without_submitting(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    argv, stdin = argv_and_input(tmp_path, f"sh -c 'echo x >> {calls}; echo 42' --")
    first = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
    again = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
    assert parse_batch_output(first.stdout) == {GID: (0, b"42\n", b"")}
    assert parse_batch_output(again.stdout) == {GID: (0, b"42\n", b"")}
    assert calls.read_text() == "x\n"


def test_an_attempt_waits_for_a_slow_one_under_way_and_submits_nothing(tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    started = tmp_path / "started"
    argv, stdin = argv_and_input(
        tmp_path, f"sh -c 'echo x >> {calls}; touch {started}; sleep 1; echo 43' --"
    )
    orphan = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert orphan.stdin is not None
    orphan.stdin.write(stdin)
    orphan.stdin.close()
    deadline = time.monotonic() + 10
    while not started.exists():  # the orphan holds the lock, its scheduler call unanswered
        assert time.monotonic() < deadline, "the first attempt never reached its scheduler"
        time.sleep(0.02)
    retry = subprocess.run(argv, input=stdin, capture_output=True, timeout=30)
    orphan.wait(timeout=10)
    assert parse_batch_output(retry.stdout) == {GID: (0, b"43\n", b"")}
    assert calls.read_text() == "x\n"
