"""How a job (or each element of an array job) ended: what the scheduler still says,
combined with what its job directory's markers (`adapters.batch.markers`) record.
A final state only on positive evidence: a job nothing at the center vouches for
is `unlisted`, never assumed ended.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from adapters.arrays import array_outcome
from adapters.base import (
    NOT_LISTED,
    ArrayElement,
    JobState,
    NativeStatus,
)
from adapters.batch.markers import ElementMarkers, JobMarkers, Termination

LEFT_QUEUE = "LEFT_QUEUE"  # native_state of a job known only from its directory


#: States in which a job is not running and has not run since it last waited: no start.
_NOT_STARTED = frozenset({JobState.SUBMITTING, JobState.QUEUED, JobState.HELD})


def with_times(
    status: NativeStatus, started_at: float | None, ended_at: float | None
) -> NativeStatus:
    """`status` with the times its state allows: a start once it runs or has run, an end
    once it has ended (a running job's end is only the scheduler's forecast)."""
    return replace(
        status,
        started_at=None if status.state in _NOT_STARTED else started_at,
        ended_at=ended_at if status.state.is_terminal else None,
    )


def _terminated(native_id: str, t: Termination, code: int | None) -> NativeStatus:
    ran = f"after {t.elapsed} s" if t.elapsed is not None else ""
    if t.at_walltime:
        limit = f" of {t.limit} s" if t.limit is not None else ""
        reason = f"terminated by the scheduler {ran}: walltime{limit} exceeded".replace("  ", " ")
        return NativeStatus(native_id, JobState.TIMEOUT, LEFT_QUEUE, reason, code)
    reason = (
        f"terminated by the scheduler {ran}, before its walltime of {t.limit} s "
        "(preempted, a node failure or an administrator)"
    )
    return NativeStatus(native_id, JobState.FAILED, LEFT_QUEUE, reason, code)


def status_from_markers(native_id: str, markers: JobMarkers | None) -> NativeStatus:
    """A job's final state as its directory tells it, with the times it recorded."""
    m = markers or JobMarkers()
    if m.native_id is not None and m.native_id != native_id:
        m = JobMarkers(cancelled=m.cancelled)  # the files belong to another submission
    return with_times(_end_from_markers(native_id, m), m.started_at, m.ended_at)


def _end_from_markers(native_id: str, m: JobMarkers) -> NativeStatus:
    if m.exit_code is not None:
        # A cancel explains only an end by a signal: an array's elements that had
        # ended on their own before their array was cancelled keep their own end.
        killed = m.terminated is not None or m.exit_code > 128
        if m.cancelled and m.exit_code != 0 and killed:
            state, reason = JobState.CANCELLED, "cancelled; exit status from the job directory"
        elif m.terminated is not None and not m.cancelled:
            return _terminated(native_id, m.terminated, m.exit_code)
        else:
            state = JobState.COMPLETED if m.exit_code == 0 else JobState.FAILED
            reason = "exit status from the job directory"
        return NativeStatus(native_id, state, LEFT_QUEUE, reason, m.exit_code)
    if m.cancelled:
        return NativeStatus(native_id, JobState.CANCELLED, LEFT_QUEUE, "cancelled", None)
    if m.terminated is not None:  # SIGKILLed before it could write its exit status
        return _terminated(native_id, m.terminated, None)
    # Not listed, and nothing at the center says it ended: a status answer that lost it
    # (a front end's defect, a history setting) is no evidence of an end.
    return unlisted(native_id)


def unlisted(native_id: str) -> NativeStatus:
    """A job the scheduler did not list and whose end nothing at the center confirms."""
    return NativeStatus(
        native_id,
        JobState.UNKNOWN,
        NOT_LISTED,
        "not in the scheduler's answer, and its job directory records no end",
        None,
    )


def ended_unrecorded(native_id: str, native_state: str) -> NativeStatus:
    """The scheduler's own record says the job ended, and neither it nor the job
    directory tells how: killed before job.sh could write its exit status."""
    return NativeStatus(
        native_id,
        JobState.FAILED,
        native_state,
        "the scheduler reports it ended, without an exit status (killed or lost)",
        None,
    )


def needs_job_dir(status: NativeStatus | None) -> bool:
    """Whether the job directory must complete what the scheduler said."""
    if status is None:  # gone from the scheduler
        return True
    if status.elements:  # an array: elements that left the queue are known only there
        return True
    if status.state.is_terminal and status.ended_at is None:
        return True  # ended, but not when: job.sh recorded it
    if status.state is JobState.COMPLETED:
        return status.exit_code is None  # "finished", but not how (Torque's C)
    if status.state is JobState.FAILED:  # killed by a signal: perhaps by our own cancel
        return status.exit_code is None or status.exit_code > 128
    # UNKNOWN: perhaps an end the scheduler's front end has no letter for.
    return status.state is JobState.UNKNOWN


def settle(native_id: str, seen: NativeStatus | None, markers: JobMarkers | None) -> NativeStatus:
    """Combine what the scheduler reports with what the job directory holds. The times
    job.sh recorded come first; the scheduler's fill what it did not record."""
    from_dir = status_from_markers(native_id, markers)
    if seen is None:
        return from_dir
    settled = _settle_end(seen, from_dir)
    started = from_dir.started_at if from_dir.started_at is not None else seen.started_at
    ended = from_dir.ended_at if from_dir.ended_at is not None else seen.ended_at
    if settled.state is JobState.CANCELLED and from_dir.started_at is None:
        started = never_started(seen.started_at, seen.ended_at)
    return with_times(settled, started, ended)


def never_started(started_at: float | None, ended_at: float | None) -> float | None:
    """The start of a cancelled job as Slurm (and its Torque wrapper) tells it: a job
    cancelled before it started gets the cancel as its start and its end, so a start
    equal to the end is none (a run cancelled within its first second bills nothing
    either way)."""
    return None if started_at is not None and started_at == ended_at else started_at


def _settle_end(seen: NativeStatus, from_dir: NativeStatus) -> NativeStatus:
    if seen.state is JobState.COMPLETED and seen.exit_code is None:
        if from_dir.native_state == NOT_LISTED:  # an end the scheduler saw, not how
            return ended_unrecorded(seen.native_id, seen.native_state)
        return replace(from_dir, native_state=seen.native_state)
    if not seen.state.is_terminal and from_dir.exit_code is not None:
        return from_dir  # it ended after the scheduler was asked: the file is newer
    ended = from_dir.exit_code is not None or from_dir.state is JobState.CANCELLED
    if seen.state is JobState.UNKNOWN and ended:
        return replace(from_dir, native_state=seen.native_state)
    if seen.state is JobState.FAILED and from_dir.state in (JobState.CANCELLED, JobState.TIMEOUT):
        # Killed by a signal (PBS: exit status 256+N): by our cancel, or at its walltime.
        code = seen.exit_code if seen.exit_code is not None else from_dir.exit_code
        return replace(seen, state=from_dir.state, reason=from_dir.reason, exit_code=code)
    if seen.exit_code is None and from_dir.exit_code is not None:
        return replace(seen, exit_code=from_dir.exit_code)
    return seen


# ------------------------------------------------------------ array jobs


def aggregate(
    native_id: str, elements: Sequence[ArrayElement], seen: NativeStatus | None = None
) -> NativeStatus:
    """One status for an array job from its elements (sorted by index), by the rule the
    gateway applies too (`array_outcome`); with no element, what the scheduler said."""
    if elements:
        state, code = array_outcome(elements)
    else:
        state, code = (seen.state if seen is not None else JobState.UNKNOWN), None
    counts = Counter(e.state for e in elements)
    reason = ", ".join(f"{n} {s.value}" for s, n in counts.items()) or None
    natives = sorted({e.native_state for e in elements})
    native_state = ",".join(natives) if natives else (seen.native_state if seen else NOT_LISTED)
    whole = NativeStatus(native_id, state, native_state, reason, code, tuple(elements))
    if not elements and seen is not None:
        return with_times(whole, seen.started_at, seen.ended_at)
    # The whole array ran from its first element's start to its last one's end.
    starts = [e.started_at for e in elements if e.started_at is not None]
    ends = [e.ended_at for e in elements if e.ended_at is not None]
    return with_times(whole, min(starts, default=None), max(ends, default=None))


def _as_status(element: ArrayElement) -> NativeStatus:
    e = element
    return NativeStatus(
        e.native_id,
        e.state,
        e.native_state,
        e.reason,
        e.exit_code,
        started_at=e.started_at,
        ended_at=e.ended_at,
    )


def as_element(index: int, status: NativeStatus) -> ArrayElement:
    """An array element with what a status of it says, times included."""
    s = status
    return ArrayElement(
        index, s.native_id, s.state, s.native_state, s.reason, s.exit_code, s.started_at, s.ended_at
    )


def settle_array(
    native_id: str,
    seen: NativeStatus | None,
    markers: JobMarkers | None,
    element_id: Callable[[int, str | None], str],
    *,
    lists_pending: bool,
    listed: Sequence[ArrayElement] = (),
) -> NativeStatus:
    """An array job's status with every element its spec names or anyone reports.

    `seen` is what the scheduler says (its `elements` those it listed); `element_id`
    names an element the scheduler did not list (index, the id the element recorded
    when it started); `listed` are elements the scheduler reported when asked about
    them by id. `lists_pending`: the scheduler lists every element not yet ended,
    pending ones included (Slurm, PBS Pro), so an element it does not list has
    ended. Otherwise (Torque front ends list only what we ask about by id) an
    element that never started waits while the array is still at the scheduler.
    """
    m = markers or JobMarkers()
    if m.native_id is not None and m.native_id != native_id:
        m = JobMarkers(cancelled=m.cancelled)  # the files belong to another submission
    reported = {e.index: e for e in (*(seen.elements if seen is not None else ()), *listed)}
    alive = (seen is not None and not seen.state.is_terminal) or any(
        not e.state.is_terminal for e in reported.values()
    )
    indices: Iterable[int] = sorted({*m.indices(), *reported, *m.elements})
    elements = []
    for index in indices:
        own = m.elements.get(index, ElementMarkers())
        listed = reported.get(index)
        if listed is not None:
            status = settle(listed.native_id, _as_status(listed), m.element(index))
        else:
            eid = element_id(index, own.started)
            waiting = own.exit_code is None and alive and not lists_pending
            if waiting and own.started is None:
                status = NativeStatus(eid, JobState.QUEUED, "PENDING", "not started yet", None)
            elif waiting and not own.started:  # started, without an id to ask about
                running = NativeStatus(eid, JobState.RUNNING, "STARTED", "started", None)
                status = with_times(running, own.started_at, None)
            else:
                status = status_from_markers(eid, m.element(index))
        elements.append(as_element(index, status))
    return aggregate(native_id, elements, seen)
