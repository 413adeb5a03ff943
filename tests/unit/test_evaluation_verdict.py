"""Score, verdict and reasons of an access evaluation, and its Markdown report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.centers.evaluation.models import CheckResult, EvaluationRecord, Figures
from gateway.centers.evaluation.render import render_markdown
from gateway.centers.evaluation.suite import BY_NAME, CHECKS, blocked_by, pending_checks
from gateway.centers.evaluation.verdict import judge, score_of, threshold_failures
from gateway.config_models import AdmissionConfig

SUITE_3 = [
    "ssh.connect",
    "ssh.host_key",
    "ssh.login",
    "scheduler.responding",
    "descriptor.valid",
    "descriptor.complete",
    "jobs.round_trip",
    "jobs.exit_codes",
    "files.staging",
    "jobs.output",
    "compute.hpl",
    "jobs.batched_status",
    "ssh.latency",
    "files.bandwidth",
]
GOOD = Figures(
    ssh_latency_ms_p50=4.0,
    ssh_latency_ms_p95=6.0,
    upload_mb_s=80.0,
    download_mb_s=100.0,
    hpl_gflops=8.29,
    hpl_cores=2,
    hpl_n=2000,
    hpl_nb=128,
    hpl_seconds=0.64,
    peak_gflops=83.2,
    efficiency=0.0996,
    gflops_per_core=4.145,
    kernel="hpl",
)
ADMISSION = AdmissionConfig()


def all_passed() -> list[CheckResult]:
    checks = pending_checks()
    for check in checks:
        check.state, check.message, check.duration_seconds = "passed", "fine", 0.5
    return checks


def with_state(checks: list[CheckResult], name: str, state: str, message: str) -> None:
    check = next(c for c in checks if c.name == name)
    check.state, check.message = state, message  # type: ignore[assignment]


def test_suite_3_lists_its_checks_in_order_with_weights_summing_to_100() -> None:
    assert [c.name for c in CHECKS] == SUITE_3
    assert sum(c.weight for c in CHECKS) == 100
    optional = {c.name for c in CHECKS if not c.required}
    assert optional == {"descriptor.complete", "compute.hpl", "ssh.latency", "files.bandwidth"}


def test_every_check_passed_and_figures_met_admits_with_score_100() -> None:
    judgement = judge(all_passed(), GOOD, ADMISSION)
    assert (judgement.verdict, judgement.score, judgement.reasons) == ("admit", 100.0, [])


def test_a_failed_required_check_refuses_whatever_the_score() -> None:
    checks = all_passed()
    with_state(checks, "jobs.exit_codes", "failed", "the exit 3 job ended COMPLETED/0")
    judgement = judge(checks, GOOD, ADMISSION)
    assert judgement.verdict == "refuse"
    assert judgement.score == 95.0  # above min_score: the required check alone refuses
    assert judgement.reasons == ["jobs.exit_codes: the exit 3 job ended COMPLETED/0"]


def test_required_checks_skipped_after_a_failure_are_named_too() -> None:
    checks = all_passed()
    with_state(
        checks, "scheduler.responding", "failed", "sinfo: Unable to contact slurm controller"
    )
    for name in ("descriptor.valid", "jobs.round_trip"):
        with_state(checks, name, "skipped", "skipped: scheduler.responding failed")
    judgement = judge(checks, GOOD, ADMISSION)
    assert judgement.verdict == "refuse"
    assert judgement.reasons[:3] == [
        "scheduler.responding: sinfo: Unable to contact slurm controller",
        "descriptor.valid: skipped: scheduler.responding failed",
        "jobs.round_trip: skipped: scheduler.responding failed",
    ]


def test_a_failed_weighted_check_lowers_the_score_and_admits_above_min_score() -> None:
    checks = all_passed()
    with_state(checks, "descriptor.complete", "failed", "missing: 'price' (not configured)")
    judgement = judge(checks, GOOD, ADMISSION)
    assert (judgement.verdict, judgement.score, judgement.reasons) == ("admit", 95.0, [])


def test_a_score_below_min_score_refuses_and_says_so() -> None:
    checks = all_passed()
    for name in ("descriptor.complete", "compute.hpl", "files.bandwidth"):
        with_state(checks, name, "failed", "broken")
    judgement = judge(checks, Figures(ssh_latency_ms_p50=4.0), ADMISSION)
    assert judgement.score == 80.0
    assert judgement.verdict == "admit"  # exactly min_score is enough
    strict = AdmissionConfig(min_score=85)
    judgement = judge(checks, Figures(ssh_latency_ms_p50=4.0), strict)
    assert judgement.verdict == "refuse"
    assert judgement.reasons == ["score 80 < 85 (admission.min_score)"]


@pytest.mark.parametrize(
    ("figures", "reason"),
    [
        (GOOD.model_copy(update={"ssh_latency_ms_p50": 412.0}), "ssh.latency: p50 412 ms > 250 ms"),
        (
            GOOD.model_copy(update={"upload_mb_s": 3.14}),
            "files.bandwidth: upload 3.14 MB/s < 5 MB/s",
        ),
        (
            GOOD.model_copy(update={"download_mb_s": 0.5}),
            "files.bandwidth: download 0.5 MB/s < 5 MB/s",
        ),
        (
            GOOD.model_copy(update={"gflops_per_core": 0.004}),
            "compute.hpl: 0.004 GFLOP/s per core < 0.01 GFLOP/s",
        ),
    ],
)
def test_an_unmet_threshold_refuses_naming_figure_and_threshold(
    figures: Figures, reason: str
) -> None:
    judgement = judge(all_passed(), figures, ADMISSION)
    assert (judgement.verdict, judgement.reasons) == ("refuse", [reason])


def test_figures_not_measured_are_not_judged_against_thresholds() -> None:
    assert threshold_failures(Figures(), ADMISSION) == {}


def test_checks_that_do_not_apply_count_neither_for_nor_against() -> None:
    checks = all_passed()
    for check in checks:
        if check.name.startswith("ssh."):
            check.state, check.applicable, check.message = "skipped", False, "local center: no SSH"
    with_state(checks, "compute.hpl", "failed", "hpcc printed no summary section")
    applicable = sum(c.weight for c in checks if c.applicable)
    assert applicable == 70
    assert score_of(checks) == round(100 * 65 / 70, 1)
    judgement = judge(checks, GOOD.model_copy(update={"ssh_latency_ms_p50": None}), ADMISSION)
    assert judgement.verdict == "admit"  # the skipped required ssh.* checks are no reason


def test_a_skipped_dependency_passes_its_cause_down() -> None:
    results = {c.name: c for c in pending_checks()}
    results["ssh.connect"].state = "passed"
    results["ssh.host_key"].state = "failed"
    assert blocked_by(BY_NAME["ssh.login"], results) == "skipped: ssh.host_key failed"
    results["ssh.login"].state, results["ssh.login"].message = (
        "skipped",
        "skipped: ssh.host_key failed",
    )
    assert blocked_by(BY_NAME["scheduler.responding"], results) == "skipped: ssh.host_key failed"
    assert blocked_by(BY_NAME["ssh.host_key"], results) is None


def test_a_dependency_that_does_not_apply_does_not_block() -> None:
    results = {c.name: c for c in pending_checks()}
    results["ssh.login"].state, results["ssh.login"].applicable = "skipped", False
    assert blocked_by(BY_NAME["scheduler.responding"], results) is None


# ------------------------------------------------------------------ the Markdown report


def record(checks: list[CheckResult], **fields: object) -> EvaluationRecord:
    created = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    base: dict[str, object] = {
        "id": "0b7c2d9e-0000-4000-8000-000000000001",
        "center": "centera",
        "requested_by": "root",
        "state": "DONE",
        "checks": checks,
        "figures": GOOD,
        "thresholds": ADMISSION.model_dump(mode="json"),
        "created_at": created,
        "finished_at": created + timedelta(seconds=12.5),
    }
    base.update(fields)
    return EvaluationRecord.model_validate(base)


def test_report_names_center_suite_date_verdict_score_and_every_check() -> None:
    checks = all_passed()
    judgement = judge(checks, GOOD, ADMISSION)
    text = render_markdown(
        record(checks, score=judgement.score, verdict=judgement.verdict, reasons=[])
    )
    title = text.splitlines()[0]
    assert title == "# Access evaluation of centera: ADMIT, score 100/100"
    assert "- suite version: 3" in text and "- date: 2025-03-04 05:06:07 UTC" in text
    rows = [line for line in text.splitlines() if line.startswith("| ") and " | passed |" in line]
    assert [row.split(" | ")[1] for row in rows] == SUITE_3
    assert "| SSH latency p50 | 4 ms | <= 250 ms (max_ssh_latency_ms) | yes |" in text
    assert "| upload | 80 MB/s | >= 5 MB/s (min_bandwidth_mb_s) | yes |" in text
    assert (
        "HPL (hpcc): 8.29 GFLOP/s on 2 cores, N=2000, NB=128, 9.96% of the 83.2 GFLOP/s "
        "peak of those cores." in text
    )
    assert "## Reasons" not in text


def test_report_of_a_refusal_lists_reasons_failed_checks_and_unmet_figures() -> None:
    checks = all_passed()
    with_state(checks, "ssh.host_key", "failed", "host key SHA256:abc | not pinned")
    checks[1].evidence = {"presented": "SHA256:abc", "pinned": ["SHA256:def"], "big": "x" * 1000}
    figures = GOOD.model_copy(update={"ssh_latency_ms_p50": 412.0})
    judgement = judge(checks, figures, ADMISSION)
    text = render_markdown(
        record(
            checks,
            figures=figures,
            score=judgement.score,
            verdict=judgement.verdict,
            reasons=judgement.reasons,
        )
    )
    assert text.startswith("# Access evaluation of centera: REFUSE, score 90/100\n")
    reasons = text.split("## Reasons\n\n")[1].split("\n\n")[0].splitlines()
    assert reasons == [
        "- ssh.host_key: host key SHA256:abc | not pinned",
        "- ssh.latency: p50 412 ms > 250 ms",
    ]
    assert "| 2 | ssh.host_key | **FAILED** | yes | 10 |" in text
    assert "host key SHA256:abc \\| not pinned |" in text  # a pipe cannot break the table
    assert "| SSH latency p50 | 412 ms | <= 250 ms (max_ssh_latency_ms) | **no** |" in text
    assert '- pinned: `["SHA256:def"]`' in text
    assert "... (1000 characters)" in text  # long evidence is cut


def test_report_of_a_running_or_broken_evaluation_has_no_verdict() -> None:
    running = render_markdown(record(pending_checks(), state="RUNNING", finished_at=None))
    assert running.startswith("# Access evaluation of centera: running\n")
    broken = render_markdown(record(pending_checks(), state="ERROR", error="the gateway stopped"))
    assert "ERROR (no verdict)" in broken and "- error: the gateway stopped" in broken


def test_an_unusable_login_environment_is_named_as_the_cause() -> None:
    from adapters.transport.framing import broken
    from gateway.centers.evaluation.checks import banner_before, unusable_login

    # What the transport raises when the login shell never ran the gateway's command.
    exc = broken("centera", "erin", b"Welcome to Center A\n", b"", "the session ended with exit 1")
    said = unusable_login("erin", exc.message)
    assert said.startswith(
        "the login environment of 'erin' is unusable, so no command runs there: "
    )
    assert "startup files" in said and "Welcome to Center A" in said
    # An unframed answer with a banner before it: the banner, not another login.
    assert banner_before("Welcome to Center A - quota: 80% used\nalice", "alice") == (
        "Welcome to Center A - quota: 80% used"
    )
    assert banner_before("alice", "alice") is None
    assert banner_before("bob", "alice") is None
