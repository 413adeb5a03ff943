"""Score, verdict and reasons of an evaluation: a pure function of its checks, its
figures and the admission thresholds (docs/evaluation.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.centers.evaluation.models import CheckResult, Figures, Verdict
from gateway.config_models import AdmissionConfig


@dataclass(frozen=True)
class Judgement:
    score: float
    verdict: Verdict
    reasons: list[str]


def num(value: float) -> str:
    """A figure as a person reads it: '412', '4.12', '0.0123'."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def threshold_failures(figures: Figures, admission: AdmissionConfig) -> dict[str, list[str]]:
    """Check name -> each measured figure of it that misses its threshold, in words.
    A figure not measured is not judged here (its check failed, which the score shows)."""
    unmet: dict[str, list[str]] = {}
    p50, limit = figures.ssh_latency_ms_p50, admission.max_ssh_latency_ms
    if p50 is not None and p50 > limit:
        unmet.setdefault("ssh.latency", []).append(f"p50 {num(p50)} ms > {num(limit)} ms")
    floor = admission.min_bandwidth_mb_s
    for way, rate in (("upload", figures.upload_mb_s), ("download", figures.download_mb_s)):
        if rate is not None and rate < floor:
            unmet.setdefault("files.bandwidth", []).append(
                f"{way} {num(rate)} MB/s < {num(floor)} MB/s"
            )
    gflops, least = figures.gflops_per_core, admission.min_gflops_per_core
    if gflops is not None and gflops < least:
        unmet.setdefault("compute.hpl", []).append(
            f"{num(gflops)} GFLOP/s per core < {num(least)} GFLOP/s"
        )
    return unmet


def score_of(checks: Sequence[CheckResult]) -> float:
    """100 x weight passed / weight of the checks that apply here."""
    counted = [c for c in checks if c.applicable]
    total = sum(c.weight for c in counted)
    if total <= 0:
        return 0.0
    passed = sum(c.weight for c in counted if c.state == "passed")
    return round(100.0 * passed / total, 1)


def judge(checks: Sequence[CheckResult], figures: Figures, admission: AdmissionConfig) -> Judgement:
    """Admit iff every required check that applies passed, the score reaches
    `min_score`, and every measured figure meets its threshold."""
    reasons = [
        f"{c.name}: {c.message or c.state}"
        for c in checks
        if c.required and c.applicable and c.state != "passed"
    ]
    for name, unmet in threshold_failures(figures, admission).items():
        reasons += [f"{name}: {text}" for text in unmet]
    score = score_of(checks)
    if score < admission.min_score:
        reasons.append(f"score {num(score)} < {num(admission.min_score)} (admission.min_score)")
    return Judgement(score=score, verdict="refuse" if reasons else "admit", reasons=reasons)
