"""The onboarding walk-through, run as a center would: real CLI and gateway processes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.centers.evaluation.models import EvaluationRecord

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_a_new_center_is_checked_evaluated_admitted_and_receives_a_placed_job(
    testbed: object, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPCFED_")}
    env["BIN"] = str(Path(sys.executable).parent)
    env["ONBOARDING_DIR"] = str(tmp_path)
    result = subprocess.run(
        ["bash", str(REPO / "examples" / "onboarding" / "walkthrough.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "centers/east.yaml: ok (center east, pbs)" in out
    assert "not evaluated yet" in out  # placement refused it before the evaluation
    record = EvaluationRecord.model_validate(json.loads((tmp_path / "evaluation.json").read_text()))
    assert (record.center, record.verdict) == ("east", "admit")
    assert "east" in (tmp_path / "evaluation.md").read_text()
    assert "placed: east (partition batch) chosen" in out
    assert re.search(r"^[0-9a-f-]{36} COMPLETED \(exit code 0\)$", result.stdout, re.MULTILINE), out
    # The walk-through's gateway is gone: its URL file is removed on shutdown.
    assert not (tmp_path / "data" / "gateway-url").exists()
