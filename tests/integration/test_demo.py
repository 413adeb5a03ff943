"""`make demo`'s script, run as a user would: real `hpcfed serve` and CLI processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_demo_runs_hello_end_to_end_on_the_local_center(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
    env["BIN"] = str(Path(sys.executable).parent)
    env["HPCFED_DATA_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        ["bash", str(REPO / "examples" / "demo.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "hello from" in result.stdout
    assert "greeting: grüß dich, world" in result.stdout
    assert "state:         COMPLETED" in result.stdout
    # The demo stopped its gateway: the URL file it leaves while serving is gone.
    assert not (tmp_path / "data" / "gateway-url").exists()
