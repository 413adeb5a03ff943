"""An access evaluation as it is stored and served: its checks, figures, score and verdict."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

#: The suite's version; a report names the version it ran.
SUITE_VERSION = "3"

CheckState = Literal["pending", "running", "passed", "failed", "skipped"]
EvaluationState = Literal["RUNNING", "DONE", "ERROR"]
Verdict = Literal["admit", "refuse"]


class CheckResult(BaseModel):
    name: str  # e.g. "ssh.host_key"; stable across suite versions where the check is the same
    title: str  # one line a person reads
    weight: float = Field(ge=0)
    required: bool  # a failure refuses the center whatever the score
    #: False where the check does not apply (the ssh.* checks at a local center): it is
    #: skipped and counts neither for nor against the score.
    applicable: bool = True
    state: CheckState = "pending"
    message: str = ""  # what happened, in a sentence
    evidence: dict[str, Any] = Field(default_factory=dict)  # commands, ids, figures, outputs
    duration_seconds: float | None = None


class Figures(BaseModel):
    """Measurements the descriptor publishes and the thresholds judge."""

    ssh_latency_ms_p50: float | None = None
    ssh_latency_ms_p95: float | None = None
    upload_mb_s: float | None = None
    download_mb_s: float | None = None
    #: HPL (hpcc) on the cores of one node: GFLOP/s, the cores (ranks), N, NB, seconds.
    hpl_gflops: float | None = None
    hpl_cores: int | None = None
    hpl_n: int | None = None
    hpl_nb: int | None = None
    hpl_seconds: float | None = None
    #: The theoretical peak of those cores (cores x clock_ghz x flops_per_cycle of the
    #: partition); None where the center file has no hardware figures for it.
    peak_gflops: float | None = None
    efficiency: float | None = None  # hpl_gflops / peak_gflops
    #: hpl_gflops / hpl_cores, judged against admission.min_gflops_per_core. Records of
    #: suite 2 hold a one-core probe's figure here, and no HPL figures.
    gflops_per_core: float | None = None
    kernel: str | None = None  # "hpl"; suite 2: numpy-matmul-768, python-multiply-add, ...


class EvaluationRecord(BaseModel):
    id: str
    center: str
    suite_version: str = SUITE_VERSION
    state: EvaluationState = "RUNNING"
    requested_by: str
    checks: list[CheckResult] = Field(default_factory=list)
    figures: Figures = Field(default_factory=Figures)
    thresholds: dict[str, Any] = Field(default_factory=dict)  # the admission config used
    score: float | None = None  # 0..100: weighted share of checks passed
    verdict: Verdict | None = None
    #: Why a center was refused: each failed required check and unmet threshold, named.
    reasons: list[str] = Field(default_factory=list)
    error: str | None = None  # the suite itself could not run (state ERROR)
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def admitted(self) -> bool:
        return self.state == "DONE" and self.verdict == "admit"

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
