"""The submit command never reaches the scheduler twice for one job dir, even when an
earlier attempt (orphaned by a gateway that died) is still running."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from adapters.jobdir import JobDir, submit_command

GID = "0b4a4e8e-6b5e-4c36-9a57-1f7c1a1c2b3d"


def test_an_attempt_after_a_lost_reply_prints_the_id_without_submitting(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path), GID)
    Path(jobdir.path).mkdir(parents=True)
    calls = tmp_path / "calls"
    fake = f"sh -c 'echo x >> {calls}; echo 42' --"
    first = subprocess.run(["sh", "-c", submit_command(jobdir, fake)], capture_output=True)
    again = subprocess.run(["sh", "-c", submit_command(jobdir, fake)], capture_output=True)
    assert (first.returncode, first.stdout) == (0, b"42\n")
    assert (again.returncode, again.stdout) == (0, b"42\n")
    assert calls.read_text() == "x\n"


def test_an_attempt_waits_for_a_slow_one_under_way_and_submits_nothing(tmp_path: Path) -> None:
    jobdir = JobDir(str(tmp_path), GID)
    Path(jobdir.path).mkdir(parents=True)
    calls = tmp_path / "calls"
    slow = f"sh -c 'echo x >> {calls}; sleep 1; echo 43' --"
    orphan = subprocess.Popen(["sh", "-c", submit_command(jobdir, slow)], stdout=subprocess.PIPE)
    time.sleep(0.3)  # the orphan holds the lock, its scheduler call not yet answered
    retry = subprocess.run(["sh", "-c", submit_command(jobdir, slow)], capture_output=True)
    orphan.wait(timeout=10)
    assert (retry.returncode, retry.stdout) == (0, b"43\n")
    assert calls.read_text() == "x\n"
    assert not Path(jobdir.file("native_id.part")).exists()
