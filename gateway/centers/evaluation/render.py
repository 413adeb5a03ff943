"""The Markdown rendering of an evaluation report, for people (the JSON is the record)."""

from __future__ import annotations

import json
from typing import Any

from gateway.centers.evaluation.models import EvaluationRecord
from gateway.centers.evaluation.verdict import num

#: A piece of evidence longer than this is cut, saying so.
EVIDENCE_LIMIT = 300
STATE_MARK = {
    "passed": "passed",
    "failed": "**FAILED**",
    "skipped": "skipped",
    "running": "running",
    "pending": "pending",
}


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _compact(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    text = " ".join(text.split())
    if len(text) > EVIDENCE_LIMIT:
        text = text[:EVIDENCE_LIMIT] + f"... ({len(text)} characters)"
    return text.replace("`", "'")


def _headline(record: EvaluationRecord) -> list[str]:
    if record.state == "RUNNING":
        outcome = "running"
    elif record.state == "ERROR":
        outcome = "ERROR (no verdict)"
    else:
        outcome = f"{(record.verdict or '-').upper()}, score {num(record.score or 0.0)}/100"
    when = record.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [
        f"# Access evaluation of {record.center}: {outcome}",
        "",
        f"- center: {record.center}",
        f"- suite version: {record.suite_version}",
        f"- evaluation: {record.id}, requested by {record.requested_by}",
        f"- date: {when}",
        f"- state: {record.state}",
        f"- verdict: {record.verdict or '-'}",
        f"- score: {'-' if record.score is None else num(record.score)}",
    ]
    if record.finished_at is not None:
        took = (record.finished_at - record.created_at).total_seconds()
        lines.append(f"- took: {took:.1f} s")
    if record.error:
        lines.append(f"- error: {record.error}")
    return lines


def _reasons(record: EvaluationRecord) -> list[str]:
    if not record.reasons:
        return []
    return ["", "## Reasons", "", *(f"- {reason}" for reason in record.reasons)]


def _checks(record: EvaluationRecord) -> list[str]:
    lines = [
        "",
        "## Checks",
        "",
        "| # | check | state | required | weight | duration | message |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, c in enumerate(record.checks, 1):
        weight = num(c.weight) if c.applicable else f"{num(c.weight)} (not counted)"
        lines.append(
            f"| {i} | {c.name} | {STATE_MARK.get(c.state, c.state)} | "
            f"{'yes' if c.required else 'no'} | {weight} | {_seconds(c.duration_seconds)} | "
            f"{_cell(c.message)} |"
        )
    return lines


def _figures(record: EvaluationRecord) -> list[str]:
    f, t = record.figures, record.thresholds
    rows: list[tuple[str, float | None, str, str, Any, bool]] = [
        # what, measured, unit, threshold as shown, threshold key, higher is better
        ("SSH latency p50", f.ssh_latency_ms_p50, "ms", "<=", "max_ssh_latency_ms", False),
        ("SSH latency p95", f.ssh_latency_ms_p95, "ms", "", None, False),
        ("upload", f.upload_mb_s, "MB/s", ">=", "min_bandwidth_mb_s", True),
        ("download", f.download_mb_s, "MB/s", ">=", "min_bandwidth_mb_s", True),
        ("compute, per core", f.gflops_per_core, "GFLOP/s", ">=", "min_gflops_per_core", True),
    ]
    lines = [
        "",
        "## Figures",
        "",
        "| figure | measured | threshold | met |",
        "| --- | --- | --- | --- |",
    ]
    for what, value, unit, op, key, higher in rows:
        limit = t.get(key) if key else None
        shown = "-" if value is None else f"{num(value)} {unit}"
        bound = f"{op} {num(limit)} {unit} ({key})" if limit is not None else "-"
        if value is None or limit is None:
            met = "-"
        else:
            met = "yes" if (value >= limit if higher else value <= limit) else "**no**"
        lines.append(f"| {what} | {shown} | {bound} | {met} |")
    if f.hpl_gflops is not None:
        against = (
            f", {num(f.efficiency * 100)}% of the {num(f.peak_gflops)} GFLOP/s peak of those cores"
            if f.peak_gflops and f.efficiency is not None
            else " (no hardware figures: no peak)"
        )
        lines += [
            "",
            f"HPL (hpcc): {num(f.hpl_gflops)} GFLOP/s on {f.hpl_cores} cores, "
            f"N={f.hpl_n}, NB={f.hpl_nb}{against}.",
        ]
    elif f.kernel:
        lines += ["", f"Compute kernel: {f.kernel}."]
    if "min_score" in t:
        lines += ["", f"Admission needs a score of at least {num(t['min_score'])} (min_score)."]
    return lines


def _evidence(record: EvaluationRecord) -> list[str]:
    lines = ["", "## Evidence"]
    for c in record.checks:
        if not c.evidence:
            continue
        lines += ["", f"### {c.name}", ""]
        lines += [f"- {key}: `{_compact(value)}`" for key, value in c.evidence.items()]
    return lines


def render_markdown(record: EvaluationRecord) -> str:
    """The report: headline (center, suite version, date, verdict, score), reasons,
    the checks, the figures against their thresholds, and each check's evidence."""
    parts = [
        *_headline(record),
        *_reasons(record),
        *_checks(record),
        *_figures(record),
        *_evidence(record),
    ]
    return "\n".join(parts) + "\n"
