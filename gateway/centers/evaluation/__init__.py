"""The access evaluation a center passes to join the federation (docs/evaluation.md)."""

from gateway.centers.evaluation.models import SUITE_VERSION, CheckResult, EvaluationRecord, Figures

__all__ = ["SUITE_VERSION", "CheckResult", "EvaluationRecord", "Figures"]
