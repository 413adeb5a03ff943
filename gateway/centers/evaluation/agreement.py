"""How the gateway's view of one job of the burst (gateway/centers/evaluation/burst.py)
is held against the center's: `Tracked` keeps both, `disagreement` says in words how
they differ.

The gateway's view is what the batched status answers told, as the poller keeps it:
an answer that does not account for a job leaves its last state. The center's view
is its per-job answer (`adapters.batch.truth.ask_one`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters.base import JobState, NativeStatus
from adapters.batch.truth import JobTruth, phase_of
from gateway.centers.evaluation.jobs import Job


@dataclass
class Tracked:
    """A job of the burst: what the gateway derived, and what the center says."""

    job: Job
    expect: tuple[JobState, int | None]  # how it should end (None: any exit code)
    #: The latest batched answer about it (None: that answer did not account for it).
    last_answer: NativeStatus | None = None
    asked: int = 0  # batched answers that were asked about it
    missing: int = 0  # of those, the ones that did not account for it
    truth: JobTruth | None = None
    cancelled_while: str | None = None  # its native state when the check cancelled it

    @property
    def label(self) -> str:
        return self.job.label

    @property
    def derived(self) -> NativeStatus | None:
        return self.job.status

    def evidence(self) -> dict[str, Any]:
        out = self.job.evidence()
        out["batched_answers"] = self.asked
        out["missing_from_batched_answers"] = self.missing
        if self.cancelled_while:
            out["cancelled_while"] = self.cancelled_while
        out["center"] = self.truth.evidence() if self.truth else None
        return out


def accounts_for(status: NativeStatus | None) -> bool:
    """Whether a batched answer tells the job's state. One that left the job out, or
    could only call it UNKNOWN (not listed, nothing confirming an end), does not: the
    poller keeps what it knew of such a job."""
    return status is not None and not status.unlisted and status.state is not JobState.UNKNOWN


def shown(status: NativeStatus | None) -> str:
    """A status in words: STATE/EXIT (native state)."""
    if status is None:
        return "nothing (never accounted for by a batched answer)"
    code = "" if status.exit_code is None else f"/{status.exit_code}"
    return f"{status.state.value}{code} ({status.native_state})"


def disagreement(t: Tracked, final: bool) -> str | None:
    """How the gateway's view of one job differs from the center's, in words; None
    when they agree. `final`: every job has ended at the center."""
    truth = t.truth
    if truth is None:
        return None
    center = truth.status
    said = f"the center says {shown(center)}"
    derived, phase = t.derived, truth.phase
    gateway = f"the gateway says {shown(derived)}"
    if phase in ("queued", "running"):
        if derived is not None and derived.state.is_terminal:
            return f"{gateway} while {said}"
        if not accounts_for(t.last_answer):
            last = "left it out" if t.last_answer is None else f"said {shown(t.last_answer)}"
            return (
                f"the batched status answers did not account for it ({t.missing} of "
                f"{t.asked}; the last {last}), {gateway}; {said}"
            )
        if derived is not None and phase_of(derived.state) != phase:
            return f"{gateway}; {said}"
        return None
    if phase == "ended":
        if derived is None or not derived.state.is_terminal:
            return f"the gateway never learned the end: {gateway}; {said}"
        if (derived.state, derived.exit_code) != (center.state, center.exit_code):
            return f"{gateway}; {said}"
        return None
    # The center has no word on it: an end the gateway shows has no evidence behind it.
    if derived is not None and derived.state.is_terminal:
        return f"{gateway}, but the center has no record of an end: {said}"
    if final:
        return f"neither knows how it ended: {gateway}; {said}"
    return None
