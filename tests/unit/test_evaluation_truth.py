"""The per-job answers the access evaluation holds the batched status path to, and the
rule that compares the two (gateway/centers/evaluation/agreement.py, adapters/batch/truth.py).

Recorded output: the `scontrol`, `sacct` and Slurm-`qstat` texts were printed by the
testbed's Slurm 22.05 (centera, and centerc's Torque-compatible qstat). The PBS Pro
server document is the `qstat -B -f -F json` part of tests/fixtures/pbs/load-pbspro_server.txt
(written after OpenPBS's format; `job_history_enable` is unset there, as after an install).
"""

from __future__ import annotations

from pathlib import Path

from adapters.base import JobState, NativeStatus
from adapters.batch.markers import JobMarkers
from adapters.batch.truth import JobTruth, combine, phase_of
from adapters.pbs.truth import parse_pbs_history
from adapters.slurm.truth import parse_scontrol_job, parse_slurm_history
from gateway.centers.evaluation.agreement import Tracked, disagreement
from gateway.centers.evaluation.jobs import Job

FIXTURES = Path(__file__).parent.parent / "fixtures"

# `scontrol show job -o <id>` on centera (tests/fixtures/slurm/scontrol_show_job_o.txt):
# 5 is a 1-core job waiting behind an 8-core one, 4 was cancelled while pending (it
# keeps its pending reason), 93 ran `exit 3`.
SCONTROL = (FIXTURES / "slurm" / "scontrol_show_job_o.txt").read_text()
# `qstat -f 1` at centerc: a finished job, as Slurm's qstat prints it (no exit status).
QSTAT_TORQUE_DONE = (
    "Job Id:\t1\n\tJob_Name = e.pbs\n\tJob_Owner = alice@localhost\n\tjob_state = C\n"
    "\tqueue = batch\n\tqtime = Wed Dec  2 15:53:34 2026\n\tmtime = Wed Dec  2 15:53:34 2026\n"
    "\tctime = Wed Dec  2 15:53:34 2026\n\texec_host = nodec/1\n\tPriority = 4294901759\n"
    "\teuser = alice(1001)\n\tegroup = alice(1001)\n\tResource_List.walltime = 48:00:00\n"
    "\tResource_List.nodect = 1\n\tResource_List.ncpus = 1\n\n"
)
# `qstat -B -f` at centerc: Slurm's qstat has no such option.
QSTAT_BF_SLURM = (
    "Unknown option: Bf\nUsage:\n    qstat [-f] [-a|-i|-r] [-n [-1]] [-G|-M] [-u user_list] "
    "[-? | --help]\n    [--man] [job_id...]\n\n    qstat -Q [-f]\n\n    qstat -q\n\n"
)


def test_scontrol_tells_a_pending_job_and_a_job_cancelled_while_pending() -> None:
    pending = parse_scontrol_job(SCONTROL, "5")
    assert pending is not None
    assert (pending.state, pending.native_state, pending.reason) == (
        JobState.QUEUED,
        "PENDING",
        "Priority",
    )
    cancelled = parse_scontrol_job(SCONTROL, "4")
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert cancelled.exit_code is None  # a cancel's ExitCode says nothing of the script
    assert parse_scontrol_job(SCONTROL, "55") is None  # not among the lines


def test_scontrol_exit_codes_and_a_forgotten_job() -> None:
    status = parse_scontrol_job(SCONTROL, "93")
    assert status is not None and (status.state, status.exit_code) == (JobState.FAILED, 3)
    # What scontrol prints (on stderr, exit 1) for a job past MinJobAge: no line at all.
    assert parse_scontrol_job("slurm_load_jobs error: Invalid job id specified\n", "5") is None


def test_slurm_without_accounting_says_finished_jobs_are_known_from_their_directory() -> None:
    config = (
        "AccountingStorageType   = accounting_storage/none\nMinJobAge               = 300 sec\n"
    )
    history = parse_slurm_history(1, "Slurm accounting storage is disabled\n", config)
    assert history.keeps_history is False
    assert "300 s (MinJobAge)" in history.implication
    assert "only from its job directory" in history.implication
    assert history.said == "Slurm accounting storage is disabled"


def test_pbs_history_settings_of_each_front_end() -> None:
    text = (FIXTURES / "pbs" / "load-pbspro_server.txt").read_text()
    server = text.rsplit("--hpcfed-markers--\n", 1)[1]
    off = parse_pbs_history(0, server, "pbspro")  # job_history_enable unset: the default
    assert off.keeps_history is False
    assert off.implication.startswith("job history is off: ")
    on = parse_pbs_history(
        0,
        server.replace('"flatuid":"True",', '"flatuid":"True", "job_history_enable":"True",'),
        "pbspro",
    )
    assert on.keeps_history is True and "qstat -x reports finished jobs" in on.implication
    unknown = parse_pbs_history(2, QSTAT_BF_SLURM, "torque")
    assert unknown.keeps_history is None
    assert "does not report its job-history settings" in unknown.implication
    assert unknown.said.startswith("Unknown option: Bf")


def test_the_center_word_combines_the_scheduler_record_and_the_job_directory() -> None:
    from adapters.pbs.parse import parse_torque_qstat

    done = parse_torque_qstat(QSTAT_TORQUE_DONE)["1"]
    # Torque's C says "ended", not how: the job directory's exit status does.
    failed = combine("1", done, JobMarkers(native_id="1", exit_code=3))
    assert (failed.state, failed.exit_code) == (JobState.FAILED, 3)
    # Neither knows it: no end is made up.
    nothing = combine("1", None, None)
    assert nothing.state is JobState.UNKNOWN
    # Forgotten by the scheduler, ended in its directory.
    ended = combine("1", None, JobMarkers(native_id="1", exit_code=0))
    assert (ended.state, ended.exit_code) == (JobState.COMPLETED, 0)
    # Listed as running, but its exit status is already there: it ended since.
    running = NativeStatus("1", JobState.RUNNING, "R")
    assert combine("1", running, JobMarkers(native_id="1", exit_code=0)).state is JobState.COMPLETED
    assert combine("1", running, None) is running


def _tracked(
    derived: NativeStatus | None, center: NativeStatus, last: NativeStatus | None = None
) -> Tracked:
    job = Job("queued, exit 0", "5bd5c1a8-0e0e-4c62-8a59-9b1c1d3c2f10", "17", status=derived)
    t = Tracked(job, (JobState.COMPLETED, 0), last_answer=last if last is not None else derived)
    t.asked, t.missing = 4, 0 if last is not None or derived is not None else 4
    t.truth = JobTruth("17", center, None, center, "qstat -f 17", "")
    return t


QUEUED = NativeStatus("17", JobState.QUEUED, "Q")
RUNNING = NativeStatus("17", JobState.RUNNING, "R")
LEFT = NativeStatus("17", JobState.FAILED, "LEFT_QUEUE", "the job left the queue", None)
DONE = NativeStatus("17", JobState.COMPLETED, "C", None, 0)


def test_the_gateway_calling_a_queued_job_failed_is_a_disagreement() -> None:
    said = disagreement(_tracked(LEFT, QUEUED), final=False)
    assert said == "the gateway says FAILED (LEFT_QUEUE) while the center says QUEUED (Q)"


def test_a_job_the_batched_answers_left_out_is_a_disagreement_while_it_waits() -> None:
    said = disagreement(_tracked(None, QUEUED), final=False)
    assert said is not None
    assert said.startswith("the batched status answers did not account for it (4 of 4; ")
    assert said.endswith("the center says QUEUED (Q)")
    # Seen queued once, then answered UNKNOWN: the poller keeps QUEUED, the check does not.
    unlisted = NativeStatus("17", JobState.UNKNOWN, "NOT_LISTED")
    kept = _tracked(QUEUED, RUNNING, last=unlisted)
    assert "the last said UNKNOWN (NOT_LISTED)" in (disagreement(kept, final=False) or "")


def test_an_end_the_gateway_never_learned_and_a_wrong_exit_code_are_disagreements() -> None:
    never = disagreement(_tracked(RUNNING, DONE), final=True)
    assert never == (
        "the gateway never learned the end: the gateway says RUNNING (R); "
        "the center says COMPLETED/0 (C)"
    )
    wrong = NativeStatus("17", JobState.FAILED, "C", None, 1)
    assert disagreement(_tracked(wrong, DONE), final=True) == (
        "the gateway says FAILED/1 (C); the center says COMPLETED/0 (C)"
    )


def test_agreement_and_phases() -> None:
    assert disagreement(_tracked(QUEUED, QUEUED), final=False) is None
    assert disagreement(_tracked(DONE, DONE), final=True) is None
    assert [phase_of(s) for s in (JobState.HELD, JobState.SUSPENDED, JobState.TIMEOUT, None)] == [
        "queued",
        "running",
        "ended",
        "unknown",
    ]


def test_openpbs_per_job_answers_with_their_stderr_and_history_off() -> None:
    """`qstat -f -F json -x <id> 2>&1` as the per-job query runs it, on the recorded
    OpenPBS 23.06 answers (tests/fixtures/pbs/openpbs_*.json; README fact 2 gives the
    history-off message, which goes to stderr)."""
    from adapters.pbs.truth import _pbs_parse_for

    parse = _pbs_parse_for("pbspro")
    finished = (FIXTURES / "pbs" / "openpbs_finished_job.qstat_f_F_json.json").read_text()
    status = parse("4.pbshost", [(0, finished)])
    assert status is not None and (status.state, status.exit_code) == (JobState.COMPLETED, 0)
    off = (FIXTURES / "pbs" / "openpbs_history_off_or_missing.qstat_f_F_json.json").read_text()
    said = "qstat: PBS is not configured to maintain job history 4.pbshost\n"
    for text in (said + off, off + said):
        assert parse("4.pbshost", [(0, text)]) is None  # the scheduler does not know it
    # ... so the center's word on it is its job directory's, or none.
    assert combine("4.pbshost", None, None).state is JobState.UNKNOWN
