"""The `hpcfed` command as a process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmLp0A8aOzNGzhjjHD4HoJ2HIlW3cZk3nY4lYZk1B8E"


def hpcfed(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def test_serve_refuses_a_bad_center_file_naming_file_field_and_value(tmp_path: Path) -> None:
    (tmp_path / "centers").mkdir()
    bad = tmp_path / "centers" / "x.yaml"
    bad.write_text(
        f"id: x\ntype: slurm\nssh: {{host: h, port: abc, login: u,\n  host_keys: ['{KEY}']}}\n"
    )
    (tmp_path / "gateway.yaml").write_text(
        f"data_dir: {tmp_path}/data\ncenter_files: [centers/*.yaml]\n"
    )
    result = hpcfed("serve", "--config", str(tmp_path / "gateway.yaml"))
    assert result.returncode == 2
    assert f"{bad}: ssh.port: " in result.stderr and "'abc'" in result.stderr


def test_center_check_reports_each_file(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("id: good\ntype: local\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: bad\ntype: local\nlocal: {max_running: -1}\n")
    result = hpcfed("center", "check", str(good), str(bad))
    assert result.returncode == 1
    assert f"{good}: ok (center good, local)" in result.stdout
    assert f"{bad}: local.max_running: " in result.stderr


def test_client_commands_say_when_no_gateway_answers(tmp_path: Path) -> None:
    result = hpcfed("--url", "http://127.0.0.1:9", "--token", "x", "status")
    assert result.returncode == 1
    assert "cannot reach the gateway at http://127.0.0.1:9" in result.stderr
