"""The rule of an array job's state: which state the whole array is in, given its
elements' states. The batch adapters (`adapters.batch.settle`) and the gateway's
poller decide by this one rule.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from adapters.base import TERMINAL_STATES, JobState


class ElementOutcome(Protocol):
    """What the rule of a whole array's state reads of each element."""

    @property
    def state(self) -> JobState: ...

    @property
    def exit_code(self) -> int | None: ...


#: Which end a whole array has when its elements ended differently: the worst one.
ARRAY_END_ORDER = (JobState.FAILED, JobState.TIMEOUT, JobState.CANCELLED, JobState.COMPLETED)


def array_outcome(elements: Iterable[ElementOutcome]) -> tuple[JobState, int | None]:
    """The state of a whole array job from its elements', and its exit code (the highest)
    once all ended. RUNNING if any element runs; else UNKNOWN if any cannot be told; else,
    while some wait, HELD or SUSPENDED if all of those are, QUEUED otherwise; once all
    ended, the worst end (`ARRAY_END_ORDER`). No element at all: UNKNOWN."""
    states: set[JobState] = set()
    codes: list[int] = []
    for e in elements:
        states.add(e.state)
        if e.exit_code is not None:
            codes.append(e.exit_code)
    if not states:
        return JobState.UNKNOWN, None
    pending = states - TERMINAL_STATES
    if pending:
        if JobState.RUNNING in pending:
            return JobState.RUNNING, None
        if JobState.UNKNOWN in pending:
            return JobState.UNKNOWN, None
        if pending in ({JobState.HELD}, {JobState.SUSPENDED}):
            return next(iter(pending)), None
        return JobState.QUEUED, None
    end = next(s for s in ARRAY_END_ORDER if s in states)
    return end, max(codes) if codes else None
